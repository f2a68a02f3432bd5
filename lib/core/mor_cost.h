/* mor_cost.h - what a config costs: its tensors (names and shapes, the MoR
 * checkpoint naming of man/mor-config.5), parameter counts, forward FLOPs per
 * token (docs/algorithms.md#flops, paper App. D) and KV-cache bytes per token
 * (docs/algorithms.md#kv-bytes). All from the config alone; nothing is
 * loaded. */
#ifndef MOR_COST_H
#define MOR_COST_H

#include <stdint.h>

#include "config.h" /* the cost model is public, in mor_train.h */

#endif
