/* stream.h - tensor streams (man/mor-stream.5): a sequence of frames, each
 * one complete safetensors blob whose __metadata__ has a "kind" ("logits",
 * "trace", ...) chosen by the tool that writes it. Frames are self-delimiting,
 * so `cat a b` is a valid stream holding a's frames then b's; the whole
 * stream may be zstd-compressed (readers detect it by the magic number). */
#ifndef MOR_STREAM_H
#define MOR_STREAM_H

#include <stdint.h>

#include "io.h"
#include "mor.h"
#include "safetensors.h"
#include "mor_train.h" /* frames and streams are public */

#endif
