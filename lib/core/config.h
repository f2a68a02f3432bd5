/* config.h - the model config: shape, RoPE, and (for recursive/MoR models)
 * sharing, routing and KV strategy, plus the training hyper-parameters.
 * Stored as YAML text in every .mor file; the schema is man/mor-config.5,
 * the algorithms behind each key are explained in docs/algorithms.md
 * (docs/algorithms.md#config-keys lists the keys of the reference code). */
#ifndef MOR_CONFIG_H
#define MOR_CONFIG_H

#include "mor.h"
#include "mor_train.h" /* the config struct and its functions are public */

#endif
