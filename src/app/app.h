/* app.h -- the smolbot command line: one binary, one function per subcommand.
 *
 * Each subcommand lives in src/app/cmd_<name>.c as
 *     int cmd_<name>(int argc, char **argv);   argv[0] is the subcommand
 * returning the process exit status (0 ok, 1 error, 2 usage). Each prints
 * its usage for --help. Only src/app may exit the process.
 */
#ifndef APP_H
#define APP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

int cmd_inspect(int argc, char **argv);
int cmd_gen_model(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_template(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_pull(int argc, char **argv);
/* Kernel micro-benchmarks (src/app/bench_kern.c), for `smolbot bench --kernels`. */
int app_bench_kernels(int argc, char **argv);
/* Random weight rows of a type with small scales (no NaN), for benchmarks. */
void app_fill_weights(int type, void *dst, int64_t rows, int64_t n);
/* `smolbot bench --kernels --gpu on` (bench/bench_gpu.c): the CUDA kernels
 * on the 3B shapes; quick: fewer repetitions. Only the bench build has it:
 * weak, NULL in the product binary. */
int app_bench_gpu_kernels(int quick) __attribute__((weak));
/* Plain read bandwidth in GB/s (summing a 256 MB buffer on the pool's threads). */
struct kern_pool;
double app_read_bw(struct kern_pool *pool);

/* `smolbot bench --tokenizer` (bench_tok.c): tokenizer load time and
 * encode/decode throughput. argv[0] is ignored. */
int app_bench_tokenizer(int argc, char **argv);

/* 1 if argv has -h or --help. */
int app_wants_help(int argc, char **argv);
/* Parse a number argument for option `opt`; on error prints a message and returns -1. */
int app_parse_int(const char *opt, const char *s, long *out);
int app_parse_float(const char *opt, const char *s, double *out);
/* The value after option argv[*i]; advances *i. Prints an error and returns NULL if missing. */
const char *app_optarg(int argc, char **argv, int *i);
/* Sampling options shared by generate and chat: --greedy, --temp, --top-p,
 * --min-p, --top-k, --seed. Returns 1 if argv[*i] was one (advancing *i
 * past its value), 0 if not, -1 on a bad value (message printed). */
struct sample_params;
int app_parse_sampling(int argc, char **argv, int *i, struct sample_params *sp, int *seed_given);
/* --gpu auto|on|off -> MODEL_GPU_* (model_opt.c); prints an error and returns -1 otherwise. */
int app_parse_gpu(const char *v, int *out);
int app_parse_kv(const char *v, int *out); /* --kv f16|f32|q8 -> MODEL_KV_* */

/* Model lookup (modelpath.c): -m, then $MODEL_PATH, then the models
 * directory ($SMOLBOT_MODELS or ~/.cache/smolbot/models), then ./models.
 * Returns 0 with the path in out, -1 if nothing was found. */
#define APP_DEFAULT_MODEL_FILE "SmolLM3-3B-Q4_K_M.gguf"
int app_find_model(const char *opt, char *out, size_t cap);
/* Before a command starts its engine: can path be opened (else "cannot
 * open PATH: why") and, full != 0, would it load (header, config,
 * tensors, tokenizer; no weights read)? Prints "CMD: ..." once and
 * returns 1 when not; 0 when it would. */
int app_check_model(const char *cmd, const char *path, int full);
int app_models_dir(char *out, size_t cap);

#endif
