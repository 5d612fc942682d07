/* SPDX-License-Identifier: MIT */
/*
 * stmodel.h: tiny models of any layout, for tests of model families that
 * genmodel does not build (vision-language, encoder-decoder, phi-1).
 *
 * A layout is text, one tensor per line: its name and its shape
 * ("model.layers.0.mlp.up_proj.weight 8 4").  "{L}" in a name stands for
 * each layer index in turn, with the count after the shape: "x.{L}.w 8 *3"
 * is x.0.w, x.1.w, x.2.w; "{L+1}" counts from 1.  Values are float32, a
 * pure function of (seed, name, element index), written in the
 * safetensors format by code that shares nothing with graph/.
 */
#ifndef STMODEL_H
#define STMODEL_H

#include <stdint.h>

/* Writes dir/model.safetensors and dir/config.json; exits on failure. */
void stm_write(const char *dir, const char *layout, const char *config,
    uint64_t seed);
/* The value stm_write() gives element i of tensor name under seed. */
float stm_value(uint64_t seed, const char *name, uint64_t i);

#endif /* STMODEL_H */
