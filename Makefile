# smolbot -- one Makefile.
#
#   make            build/smolbot (portable: SIMD kernels are chosen at run time)
#   make test       sanitized build (ASan+UBSan), every test, ends "N passed, N failed"
#   make run        install what is missing, build, find or pull a model, serve :3000
#   make bench      3B-shaped model (generated once, cached outside git) + kernel benches
#   make native     build/smolbot tuned for this CPU (-march=native)
#   make fuzz       libFuzzer targets (clang) in build/fuzz/
#
# Sources are found by wildcard: a module is a folder under src/, a unit test
# is tests/test_<name>.c, a fuzz target is tests/fuzz/fuzz_<name>.c.

CC      ?= cc
ifeq ($(CC),cc)
CC      := gcc
endif
CLANG   ?= clang
# -D_GNU_SOURCE: mremap/strcasestr and friends; the code is C11 otherwise.
# libpq's header lives in a folder of its own (Debian: /usr/include/postgresql).
PG_INC  := $(or $(shell pg_config --includedir 2>/dev/null),/usr/include/postgresql)
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g -Wall -Wextra -Wno-unused-parameter -pthread -Isrc -I$(PG_INC)
OPT     ?= -O2
LDLIBS  := -lm -lpthread -lsqlite3 -lpq -ljansson -lmicrohttpd -lcurl -lmd4c -lmd4c-html
# Sanitized objects keep -O1 so tests that run the model stay quick.
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

SRC     := $(wildcard src/*/*.c)
LIB_SRC := $(filter-out src/app/%,$(SRC))
APP_SRC := $(filter src/app/%,$(SRC))
GEN_SRC := build/gen/assets.c
TESTS   := $(patsubst tests/%.c,%,$(wildcard tests/test_*.c)) test_gpu_emu test_gpu_on_emu test_kern_amx_emu
FUZZ    := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
# htmx and its SSE extension, pinned in web/package-lock.json; named, not
# wildcarded, so a clean clone fetches them (npm ci) before embedding.
# highlight.js (code colours) and KaTeX (math) with its woff2 fonts, the same way.
HTMX    := web/node_modules/htmx.org/dist/htmx.min.js web/node_modules/htmx-ext-sse/dist/sse.min.js \
           web/node_modules/@highlightjs/cdn-assets/highlight.min.js \
           web/node_modules/katex/dist/katex.min.js web/node_modules/katex/dist/katex.min.css \
           $(addprefix web/node_modules/katex/dist/fonts/KaTeX_,$(addsuffix .woff2,AMS-Regular Caligraphic-Bold \
             Caligraphic-Regular Fraktur-Bold Fraktur-Regular Main-Bold Main-BoldItalic Main-Italic Main-Regular \
             Math-BoldItalic Math-Italic SansSerif-Bold SansSerif-Italic SansSerif-Regular Script-Regular \
             Size1-Regular Size2-Regular Size3-Regular Size4-Regular Typewriter-Regular))
WEB     := $(shell find web -type f -not -path 'web/node_modules/*' -not -name 'package*.json' 2>/dev/null | sort) \
           $(HTMX)

REL_OBJ := $(patsubst %.c,build/rel/%.o,$(SRC) $(GEN_SRC))
SAN_LIB := $(patsubst %.c,build/san/%.o,$(LIB_SRC) $(GEN_SRC))
SAN_APP := $(patsubst %.c,build/san/%.o,$(APP_SRC))

# ---- CUDA backend: make CUDA=1 [CUDA_ARCH=sm_90] [CUDA_HOME=/usr/local/cuda]
# nvcc compiles the .cu files of src/model/cuda (the C wildcard above never
# sees them) and the binaries link libcudart statically (no runtime library
# to find on the GPU machine); -lstdc++ for nvcc's host code.
# The C objects are identical in both builds (src/model/cuda.c declares
# the gpu_* functions weak), and build/gen/mode.c names the build, so
# switching CUDA on or off relinks every binary without a `make clean`.
CUDA      ?= 0
CUDA_HOME ?= /usr/local/cuda
CUDA_ARCH ?= sm_90
NVCC      ?= $(CUDA_HOME)/bin/nvcc
MODE_SRC  := build/gen/mode.c
CU_HDR    := $(wildcard src/model/cuda/*.h src/model/cuda/*.cuh) src/kern/kern.h
ifeq ($(CUDA),1)
CU_OBJ    := $(patsubst %.cu,build/cuda/%.o,$(wildcard src/model/cuda/*.cu))
LDLIBS    += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
endif
REL_OBJ   += build/rel/build/gen/mode.o $(CU_OBJ)
SAN_LIB   += build/san/build/gen/mode.o $(CU_OBJ)
REL_LIB   := $(filter-out build/rel/src/app/%,$(REL_OBJ))

.PHONY: all deps deps-test native test run bench bench-server fuzz clean web
all: deps build/smolbot

deps:
	@bash scripts/deps.sh build

deps-test:
	@bash scripts/deps.sh build test

build/smolbot: $(REL_OBJ)
	$(CC) $(CFLAGS_BASE) $(OPT) -o $@ $^ $(LDLIBS)

native:
	$(MAKE) OPT="-O3 -march=native" BUILD_TAG=native build/smolbot

build/rel/%.o: %.c $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(OPT) -c -o $@ $<

build/san/%.o: %.c $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -O1 $(SAN) -c -o $@ $<

# Web assets are embedded into the binary as byte arrays.
$(HTMX) &: web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	@touch $(HTMX)

$(GEN_SRC): tools/embed.sh $(WEB)
	@mkdir -p $(dir $@)
	bash tools/embed.sh $@ $(WEB)

build/san/smolbot: $(SAN_LIB) $(SAN_APP)
	$(CC) $(CFLAGS_BASE) -O1 $(SAN) -o $@ $^ $(LDLIBS)

build/san/test_%: tests/test_%.c tests/t.h tests/t_model.h tests/t_chat.h $(SAN_LIB)
	$(CC) $(CFLAGS_BASE) -O1 $(SAN) -o $@ $< $(SAN_LIB) $(LDLIBS)

# The AMX kernel on CPUs without AMX (src/kern/amx_emu.h): test_kern for
# "amx" against kern objects whose tile instructions are C.
AMX_EMU_OBJ := $(patsubst %.c,build/amxemu/%.o,$(wildcard src/kern/*.c))
build/amxemu/%.o: %.c $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -DKERN_AMX_EMU -O1 $(SAN) -c -o $@ $<
build/san/test_kern_amx_emu: tests/test_kern.c tests/t.h $(AMX_EMU_OBJ) $(SAN_LIB)
	$(CC) $(CFLAGS_BASE) -DKERN_AMX_EMU -O1 $(SAN) -o $@ $< $(AMX_EMU_OBJ) \
	  $(filter-out build/san/src/kern/%,$(SAN_LIB)) $(LDLIBS)

# npm packages of the node e2e suites (the openai client, ...), pinned in tests/e2e/package-lock.json.
E2E_DEPS := tests/e2e/node_modules/.package-lock.json
$(E2E_DEPS): tests/e2e/package-lock.json
	npm ci --prefix tests/e2e --no-audit --no-fund

test: deps-test build/smolbot build/san/smolbot $(addprefix build/san/,$(TESTS)) fuzz-smoke $(E2E_DEPS)
	@bash tests/run.sh $(addprefix build/san/,$(TESTS))

# ---- fuzzing (clang + libFuzzer) ----
# Library objects are built once with coverage (fuzzer-no-link) and shared
# by every target; only the target file links the libFuzzer main.
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -Isrc -I$(PG_INC) -pthread -fsanitize=address,undefined
FUZZ_LIB   := $(patsubst %.c,build/fz/%.o,$(LIB_SRC) $(GEN_SRC))
build/fz/%.o: %.c $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<
.SECONDARY: $(FUZZ_LIB) # keep the objects: they are shared by every target
build/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB) $(LDLIBS)

fuzz: deps-test $(addprefix build/fuzz/,$(FUZZ))
	@echo "fuzz targets in build/fuzz/: run e.g. build/fuzz/fuzz_gguf tests/fuzz/corpus/gguf -max_total_time=600"

# A short bounded run of each target belongs to `make test` (tests/run.sh).
fuzz-smoke: $(addprefix build/fuzz/,$(FUZZ))

# The long runs: fuzzing, 50-stream load, 2,000-request soak,
# SIGKILL and disk-full faults, valgrind; prints a table. Minutes, not seconds.
.PHONY: reliability
reliability: deps-test build/smolbot $(E2E_DEPS)
	-@$(MAKE) --no-print-directory fuzz-smoke
	@bash tests/reliability.sh

# ---- running ----
run: deps build/smolbot
	@bash scripts/run.sh

# PostgreSQL + N replicas + nginx on this machine (scripts/cluster.sh):
# make cluster [N=3] [MODEL=path.gguf]; make cluster-stop
N ?= 3
.PHONY: cluster cluster-stop
cluster: deps build/smolbot
	@bash scripts/cluster.sh start $(N) $(if $(MODEL),-m $(MODEL))
cluster-stop:
	@bash scripts/cluster.sh stop

BENCH_MODEL ?= $(HOME)/.cache/smolbot/bench/smollm3-3b-q4_k_m-random.gguf
bench: deps build/smolbot build/bench-batch
	@bash bench/bench.sh "$(BENCH_MODEL)"

# batched and mixed step times (bench/batch.c), run by bench.sh
build/bench-batch: build/rel/bench/batch.o $(REL_LIB)
	$(CC) $(CFLAGS_BASE) $(OPT) -o $@ $^ $(LDLIBS)

# Speed through the server on the 3B-shaped model (bench/server.mjs): 1, 4
# and 8 streams, a long prompt beside running streams, interleaved clients'
# cache reuse. LLAMA_SERVER=/path/to/llama-server runs the same against it.
LLAMA_SERVER ?=
bench-server: deps build/smolbot
	@bash bench/model.sh "$(BENCH_MODEL)"
	node bench/server.mjs "$(BENCH_MODEL)" $(if $(LLAMA_SERVER),--llama-server "$(LLAMA_SERVER)")

clean:
	rm -rf build

# ---- CUDA ----
.PHONY: cuda-check cuda-profile FORCE
FORCE:
$(MODE_SRC): FORCE
	@mkdir -p $(dir $@)
	@echo 'const char *const smolbot_build_mode = "$(if $(filter 1,$(CUDA)),cuda $(CUDA_ARCH),cpu)";' > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi

# -fPIC: the host objects go into a PIE binary; -O3 for the device code.
build/cuda/%.o: %.cu $(CU_HDR)
	@mkdir -p $(dir $@)
	$(NVCC) -O3 -std=c++17 -arch=$(CUDA_ARCH) -Isrc -Xcompiler -fPIC,-Wall -c -o $@ $<

# Unsanitized test binaries (CUDA and ASan do not mix well): build/rel/test_gpu,
# with the kernel probes (tests/test_gpu_probe.cu) in a CUDA build.
PROBE_OBJ := $(if $(filter 1,$(CUDA)),build/cuda/tests/test_gpu_probe.o)
build/rel/test_%: tests/test_%.c tests/t.h tests/t_model.h $(REL_LIB) $(PROBE_OBJ)
	$(CC) $(CFLAGS_BASE) $(OPT) -o $@ $< $(REL_LIB) $(PROBE_OBJ) $(LDLIBS)

# The bench build (CUDA=1 only): smolbot with the kernel probes and
# bench/bench_gpu.c, for `bench --kernels --gpu on`.
build/smolbot-bench: $(REL_OBJ) $(PROBE_OBJ) build/rel/bench/bench_gpu.o
	$(CC) $(CFLAGS_BASE) $(OPT) -o $@ $^ $(LDLIBS)

# Build with CUDA, GPU tests, 3B-shaped model, bench table (needs a GPU).
cuda-check:
	@bash scripts/cuda-check.sh

# each decode kernel alone under Nsight Compute (a GPU machine with ncu;
# after cuda-check, which makes the model): DEPTH=N for a context depth
cuda-profile:
	@bash scripts/cuda-profile.sh $(or $(DEPTH),0)

# The CUDA kernels' code on the CPU (src/model/cuda/emu.h): a C++ test,
# sanitized like the others, linked without the nvcc objects (their kernel
# stubs carry the same names).
CXX ?= g++
EMU_LIB := $(filter-out $(CU_OBJ),$(SAN_LIB))
# the kernels pun types the way nvcc allows (halves in 32-bit words)
EMU_FLAGS := -std=c++17 -D_GNU_SOURCE -DSMOLBOT_GPU_EMU -fno-strict-aliasing -pthread -Isrc -Wall -Wextra \
             -Wno-unused-parameter -Wno-unknown-pragmas -Wno-unused-function
build/san/test_gpu_emu: tests/test_gpu_emu.cpp tests/t.h tests/t_gpu.h $(CU_HDR) $(EMU_LIB)
	$(CXX) $(EMU_FLAGS) -g -O1 $(SAN) -o $@ $< $(EMU_LIB) $(LDLIBS)

# test_gpu.c again, against the backend and the probes compiled for the
# CPU emulation: the whole CUDA backend (upload, graphs, fused decode,
# prefill chunks, top-k) on every machine; a GPU runs build/rel/test_gpu.
# UBSan only, -O2: a model's forward is millions of emulated blocks, and
# test_gpu_emu already runs the kernels under ASan.
build/emu/%.o: %.cu $(CU_HDR)
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_FLAGS) -g -O2 -fsanitize=undefined -fno-sanitize-recover=undefined -x c++ -c -o $@ $<
EMU_OBJ := build/emu/src/model/cuda/gpu.o build/emu/tests/test_gpu_probe.o
build/san/test_gpu_on_emu: tests/test_gpu.c tests/t.h tests/t_model.h tests/t_gpu.h $(EMU_OBJ) $(EMU_LIB)
	$(CC) $(CFLAGS_BASE) -O1 $(SAN) -c -o $@.o $<
	$(CXX) -O1 $(SAN) -pthread -o $@ $@.o $(EMU_OBJ) $(EMU_LIB) $(LDLIBS)
