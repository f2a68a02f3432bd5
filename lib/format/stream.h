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

#define MOR_STREAM_KIND "kind" /* the metadata key every frame carries */

/* A frame under construction: metadata and named tensors, copied in. */
typedef struct mor_frame mor_frame;

/* kind is required and non-empty. Returns NULL when out of memory. */
mor_frame *mor_frame_new(const char *kind);
void mor_frame_free(mor_frame *f);
/* Drops every tensor and metadata entry and sets a new kind, keeping the
 * allocations: one frame object can build a whole stream. */
mor_status mor_frame_reset(mor_frame *f, const char *kind, mor_error *err);
/* Sets a string metadata entry (a key set twice keeps the last value). */
mor_status mor_frame_meta(mor_frame *f, const char *key, const char *value, mor_error *err);
/* Adds a tensor, copying numel * dtype-size bytes from data. Names are
 * unique within a frame. */
mor_status mor_frame_add(mor_frame *f, const char *name, mor_st_dtype dtype, int ndim,
                         const int64_t *shape, const void *data, mor_error *err);
/* Shorthands for the common cases. */
mor_status mor_frame_add_f32(mor_frame *f, const char *name, int ndim, const int64_t *shape,
                             const float *data, mor_error *err);
mor_status mor_frame_add_i32(mor_frame *f, const char *name, int ndim, const int64_t *shape,
                             const int32_t *data, mor_error *err);

/* Appends the frame to a sink (tensors in the order added). The sink is not
 * flushed; call mor_sink_flush for a live pipe, mor_sink_finish at the end. */
mor_status mor_stream_write_frame(mor_sink *s, const mor_frame *f, mor_error *err);

/* Reads the next frame. At the end of the stream *frame is NULL and MOR_OK is
 * returned. Otherwise *frame is a validated safetensors handle (free it with
 * mor_st_close) whose path reads "NAME: frame I at byte B" (B counts
 * uncompressed bytes). A stream that ends inside a frame, or a frame without
 * "kind", is MOR_EFORMAT naming the frame index and byte offset. */
mor_status mor_stream_next(mor_source *src, mor_st_file **frame, mor_error *err);

/* The frame's kind (never NULL for frames from mor_stream_next). */
const char *mor_frame_kind(const mor_st_file *frame);

/* Looks a tensor up and checks its dtype and rank (ndim < 0: any rank);
 * MOR_EFORMAT names the frame and what was expected. */
mor_status mor_frame_get(const mor_st_file *frame, const char *name, mor_st_dtype dtype, int ndim,
                         const mor_st_tensor **out, mor_error *err);

#endif
