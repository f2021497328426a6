/* amx_emu.h -- the AMX tile instructions that avx512.c uses, in C, for a
 * test build (-DKERN_AMX_EMU) on CPUs without AMX.
 *
 * Neither the machines this project is built on nor CI have a tile unit,
 * so the AMX kernel's logic (its layouts, its unpacking, its float
 * epilogue) would otherwise run only where a user has one. Built with
 * this header, avx512.c runs the same kernel with each tile instruction
 * replaced by a function over eight emulated tiles, and kern_init offers
 * "amx" wherever the AVX-512 kernels run; test_kern_amx_emu then puts it
 * through test_kern's checks. What it cannot check is the hardware: the
 * instruction semantics here are the Intel SDM's pseudocode for palette 1
 * (16 rows of up to 64 bytes a tile), tdpbusd's A unsigned and B signed.
 *
 * Tile state is per thread, like the registers it stands for. */
#ifndef KERN_AMX_EMU_H
#define KERN_AMX_EMU_H

#include <stdint.h>
#include <string.h>

typedef struct {
    uint8_t t[8][16][64]; /* tmm0-7, row-major */
    uint8_t rows[8];
    uint16_t colsb[8];
} amx_emu_state;

static _Thread_local amx_emu_state amx_emu;

/* ldtilecfg of a 64-byte palette-1 configuration: colsb at 16, rows at 48 */
static inline void amx_emu_cfg(const void *cfg) {
    const uint8_t *c = cfg;
    memset(&amx_emu, 0, sizeof amx_emu);
    for (int i = 0; i < 8; i++) {
        amx_emu.colsb[i] = (uint16_t)(c[16 + 2 * i] | c[17 + 2 * i] << 8);
        amx_emu.rows[i] = c[48 + i];
    }
}

static inline void amx_emu_loadd(int n, const void *base, long stride) {
    for (int r = 0; r < amx_emu.rows[n]; r++) memcpy(amx_emu.t[n][r], (const uint8_t *)base + r * stride, amx_emu.colsb[n]);
}

static inline void amx_emu_stored(int n, void *base, long stride) {
    for (int r = 0; r < amx_emu.rows[n]; r++) memcpy((uint8_t *)base + r * stride, amx_emu.t[n][r], amx_emu.colsb[n]);
}

static inline void amx_emu_zero(int n) { memset(amx_emu.t[n], 0, sizeof amx_emu.t[n]); }

/* C[m][j] += sum over k, e of A[m][4k + e] (u8) * B[k][4j + e] (s8) */
static inline void amx_emu_dpbusd(int c, int a, int b) {
    for (int m = 0; m < amx_emu.rows[c]; m++)
        for (int j = 0; j < amx_emu.colsb[c] / 4; j++) {
            int32_t s;
            memcpy(&s, amx_emu.t[c][m] + 4 * j, 4);
            for (int k = 0; k < amx_emu.colsb[a] / 4; k++)
                for (int e = 0; e < 4; e++)
                    s += (int32_t)amx_emu.t[a][m][4 * k + e] * (int8_t)amx_emu.t[b][k][4 * j + e];
            memcpy(amx_emu.t[c][m] + 4 * j, &s, 4);
        }
}

#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbusd
#define _tile_loadd(n, base, stride) amx_emu_loadd(n, base, stride)
#define _tile_stored(n, base, stride) amx_emu_stored(n, base, stride)
#define _tile_zero(n) amx_emu_zero(n)
#define _tile_dpbusd(c, a, b) amx_emu_dpbusd(c, a, b)
#define _tile_release() memset(&amx_emu, 0, sizeof amx_emu)
#define AMX_LOADCFG(cfg) amx_emu_cfg(cfg)

#endif
