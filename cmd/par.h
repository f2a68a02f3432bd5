/* par.h - the tools' data-parallel layer: one process per MPI rank
 * (mpirun -np N mor-train|mor-eval ...), over Open MPI when the tools are
 * built with it (the Makefile defines MOR_HAVE_MPI when it finds mpicc), one
 * process otherwise. libmor itself links no MPI: the trainer receives the
 * collectives as a mor_train_comm (mor_train.h) that par_train_comm builds.
 *
 * Every collective here is called by every rank in the same order with the
 * same sizes. A failed MPI call ends the whole job (MPI_ERRORS_ARE_FATAL),
 * and so does a rank that dies: mpirun notices and kills the others, so no
 * rank ever waits for a dead peer. Every name starts with par_ because the
 * Makefile links every cmd/ file that is not a tool into every tool. */
#ifndef MOR_PAR_H
#define MOR_PAR_H

#include <stddef.h>
#include <stdint.h>

#include "mor_train.h"

/* Joins the MPI job when mpirun launched this process (MPI_Init), and makes
 * every rank but 0 quiet (cli_set_quiet). A build without MPI launched as
 * several ranks refuses to run N independent copies. Returns 0 or an exit
 * code (the error printed). tool names the tool in messages. */
int par_init(int *argc, char ***argv);
/* Ends the job: MPI_Finalize when rc is 0; MPI_Abort(rc) otherwise, so that
 * a rank that fails takes the others down instead of leaving them blocked
 * in a collective. Returns rc (alone, or without MPI). */
int par_finish(int rc);

int par_rank(void);
int par_size(void);
/* The default thread count of a rank (-t not given): 0 alone (the
 * library's default, the physical cores); under mpirun the CPUs the rank
 * may run on (mpirun's binding), shared with the other ranks of this
 * machine when it is not bound. */
int par_default_threads(void);

/* The trainer's collectives (mor_trainer_set_comm), or NULL alone. */
const mor_train_comm *par_train_comm(void);

/* buf (n) <- the sum over the ranks, added in rank order (same bytes on
 * every rank). */
void par_sum_f64(double *buf, size_t n);
/* Rank 0's bytes into every rank's buf. */
void par_bcast(void *buf, size_t bytes);
/* Rank 0's string (or NULL) into every rank's *s (malloc'ed; the old value
 * of the other ranks is freed). Returns 0 or -1 when out of memory. */
int par_bcast_str(char **s);
/* Rank 0 receives every rank's n doubles: *all (malloc'ed) holds them rank
 * after rank, counts[k] (size par_size()) rank k's count. The other ranks
 * get *all = NULL. Returns 0 or -1 when out of memory. */
int par_gather(const double *mine, size_t n, double **all, size_t *counts);

/* What the collectives cost this rank so far: bytes given to the sums
 * (the all-reduced payload), bytes this rank sent, and seconds spent in
 * MPI calls (waiting for the slowest rank and for the transfers). */
typedef struct par_stats {
    double reduced_bytes, sent_bytes, wait_s;
    long calls;
} par_stats;
par_stats par_get_stats(void);

#endif
