# mor - Mixture-of-Recursions toolkit.
#   make              lib/libmor.so (versioned, with a SONAME), lib/libmor.a, bin/mor-*
#   make test         build and run the cmocka suites (tests/test_*.c)
#   make SAN=1 OUT=build/san test   the same under ASan + UBSan, out of tree
#   make install PREFIX=/usr/local  tools, library, headers, mor.pc, man pages
#   make fuzz FUZZ_SECONDS=N   libFuzzer harnesses (clang, ASan + UBSan), N s each
#
# The library is layered (lib/README.md): each folder's objects are compiled
# with the include paths of the folders below it only, so an include that runs
# against the layering fails to compile.
CC      ?= cc
OUT     ?= .
PREFIX  ?= /usr/local
PKG_CONFIG ?= pkg-config

VERSION   := $(shell sed -n 's/^\#define MOR_VERSION "\(.*\)"/\1/p' include/mor.h)
SOVERSION = 0

# OpenBLAS (the OpenMP build, so OpenBLAS and mor's own kernels share one
# thread pool) found through pkg-config; its library folder goes into the
# run path because Debian keeps each OpenBLAS variant in a folder of its own.
BLAS_CFLAGS := $(shell $(PKG_CONFIG) --cflags openblas)
BLAS_LIBDIR := $(shell $(PKG_CONFIG) --variable=libdir openblas)
BLAS_LIBS   := $(shell $(PKG_CONFIG) --libs openblas) -Wl,-rpath,$(BLAS_LIBDIR)

# Open MPI, for data-parallel runs (mpirun -np N mor-train|mor-eval, cmd/par.c):
# found through pkg-config, else mpicc; without it the tools run as one
# process and refuse to be launched as several ranks.
MPI_CFLAGS := $(shell $(PKG_CONFIG) --cflags ompi-c 2>/dev/null || mpicc --showme:compile 2>/dev/null)
MPI_LIBS   := $(shell $(PKG_CONFIG) --libs ompi-c 2>/dev/null || mpicc --showme:link 2>/dev/null)

WARN    = -Wall -Wextra -Wno-unused-parameter -Wshadow -Wstrict-prototypes
OPT     = -O2 -march=x86-64-v3 -fno-math-errno
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -fPIC -fopenmp -fvisibility=hidden $(WARN) $(BLAS_CFLAGS) -MMD -MP
LDLIBS  = $(BLAS_LIBS) -lyaml -lzstd -ljansson -lpcre2-8 -lutf8proc -lm -fopenmp
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# The layers, bottom up: a folder may include its own headers and those of
# the folders named after it here.
LAYERS      = core kernels tok format infer train
DEPS_core    = core
DEPS_kernels = kernels core
DEPS_tok     = tok core
DEPS_format  = format tok core
DEPS_infer   = infer format tok kernels core
DEPS_train   = train format tok kernels core
LIB_INC_ALL  = $(addprefix -Ilib/,$(LAYERS))

LIB_SRC  = $(sort $(foreach l,$(LAYERS),$(wildcard lib/$(l)/*.c)))
LIB_OBJ  = $(LIB_SRC:%.c=$(OUT)/obj/%.o)
CLI_SRC  = $(filter-out cmd/mor-%.c,$(wildcard cmd/*.c))
CLI_OBJ  = $(CLI_SRC:%.c=$(OUT)/obj/%.o)
BIN_SRC  = $(sort $(wildcard cmd/mor-*.c))
BINS     = $(BIN_SRC:cmd/%.c=$(OUT)/bin/%)
TEST_SRC = $(sort $(wildcard tests/test_*.c))
TESTS    = $(TEST_SRC:tests/%.c=$(OUT)/bin/tests/%)
TEST_HELP_OBJ = $(OUT)/obj/tests/testutil.o
BENCH_SRC = $(sort $(wildcard bench/*.c))
BENCHES  = $(BENCH_SRC:bench/%.c=$(OUT)/bin/bench/%)
LIBA     = $(OUT)/lib/libmor.a
LIBSO    = $(OUT)/lib/libmor.so
SONAME   = libmor.so.$(SOVERSION)
LIBSO_REAL = $(OUT)/lib/libmor.so.$(VERSION)

all: $(LIBA) $(LIBSO) $(BINS)

$(foreach l,$(LAYERS),$(eval $(OUT)/obj/lib/$(l)/%.o: INC = -Iinclude $(addprefix -Ilib/,$(DEPS_$(l)))))
$(OUT)/obj/lib/%.o: lib/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INC) -c $< -o $@

# The tools see the installed headers only (include/), as a program built
# against an installed libmor would; tests and benchmarks may reach inside.
$(OUT)/obj/cmd/%.o: cmd/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iinclude -Icmd -c $< -o $@

$(OUT)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iinclude $(LIB_INC_ALL) -Icmd -c $< -o $@

# --version names the commit the tools were built from; the stamp changes
# (and cli.o is rebuilt) only when the commit does.
COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
$(OUT)/obj/commit.stamp: FORCE
	@mkdir -p $(dir $@)
	@echo $(COMMIT) | cmp -s - $@ || echo $(COMMIT) > $@
$(OUT)/obj/cmd/cli.o: $(OUT)/obj/commit.stamp
$(OUT)/obj/cmd/cli.o: CFLAGS += -DMOR_COMMIT='"$(COMMIT)"'
ifneq ($(strip $(MPI_LIBS)),)
$(OUT)/obj/cmd/par.o: CFLAGS += -DMOR_HAVE_MPI $(MPI_CFLAGS)
endif

$(LIBA): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBSO_REAL): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-soname,$(SONAME) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(LIBSO): $(LIBSO_REAL)
	ln -sf libmor.so.$(VERSION) $(OUT)/lib/$(SONAME)
	ln -sf $(SONAME) $@

$(OUT)/bin/%: $(OUT)/obj/cmd/%.o $(CLI_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(CLI_OBJ) $(LIBA) $(LDLIBS) $(MPI_LIBS)

$(OUT)/bin/tests/%: $(OUT)/obj/tests/%.o $(TEST_HELP_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(TEST_HELP_OBJ) $(LIBA) $(LDLIBS) -lcmocka

$(OUT)/bin/bench/%: $(OUT)/obj/bench/%.o $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBA) $(LDLIBS)

tests: $(TESTS)

# Benchmarks: bin/bench/*; the scripts in bench/ run them (bench/README.md).
bench: all $(BENCHES)

# Each suite runs from the repository root with MOR_BIN pointing at the tools;
# tests/test_mpi.sh runs them under mpirun when they were built with Open MPI.
# Then the structure: no call cycle between library files and none up the
# layers (check_calls.py), no machine path or notes citation (check_paths.sh).
test: all $(TESTS)
	@MOR_BIN=$(OUT)/bin OUT=$(OUT) MOR_MPI=$(if $(strip $(MPI_LIBS)),1,0) bash tests/run.sh $(TESTS) tests/test_mpi.sh
	@python3 tests/tools/check_calls.py $(OUT)
	@bash tests/tools/check_paths.sh

# Installs into a temporary prefix and builds examples/ against it through
# pkg-config (tests/tools/check_install.sh).
check-install: all
	@bash tests/tools/check_install.sh

# Fuzzing (tests/fuzz/README.md): the library and cmd/ objects built again with
# clang and coverage for libFuzzer, under ASan + UBSan, out of tree in
# FUZZ_OUT; one binary per harness tests/fuzz/fuzz_*.c; tests/fuzz/run.sh runs
# each for FUZZ_SECONDS over its seeds and regression inputs.
FUZZ_CC      ?= clang
FUZZ_OUT     ?= build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS  = -O1 -g -std=c11 -D_GNU_SOURCE -fopenmp $(WARN) $(BLAS_CFLAGS) -Iinclude $(LIB_INC_ALL) \
               -Icmd -fno-omit-frame-pointer -fsanitize=address,undefined \
               -fno-sanitize-recover=undefined -Wno-pass-failed -MMD -MP
FUZZ_SRC     = $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS    = $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_OUT)/bin/%)
FUZZ_LIBA    = $(FUZZ_OUT)/libmor-fuzz.a

$(FUZZ_OUT)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_LIBA): $(LIB_SRC:%.c=$(FUZZ_OUT)/obj/%.o) $(CLI_SRC:%.c=$(FUZZ_OUT)/obj/%.o)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_OUT)/bin/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_LIBA)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIBA) $(LDLIBS)

fuzz: $(FUZZ_BINS)
	@FUZZ_OUT=$(FUZZ_OUT) bash tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_BINS)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include \
	    $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man3 \
	    $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin
	install -m 644 $(LIBA) $(DESTDIR)$(PREFIX)/lib
	install -m 755 $(LIBSO_REAL) $(DESTDIR)$(PREFIX)/lib
	ln -sf libmor.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libmor.so
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' mor.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/mor.pc
	install -m 644 $(wildcard include/*.h) $(DESTDIR)$(PREFIX)/include
	install -m 644 $(wildcard man/*.1) $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 644 $(wildcard man/*.3) $(DESTDIR)$(PREFIX)/share/man/man3
	install -m 644 $(wildcard man/*.5) $(DESTDIR)$(PREFIX)/share/man/man5

clean:
	rm -rf $(OUT)/obj $(OUT)/bin $(LIBA) $(OUT)/lib/libmor.so*

-include $(patsubst %.o,%.d,$(LIB_OBJ) $(CLI_OBJ) $(BIN_SRC:%.c=$(OUT)/obj/%.o) \
    $(TEST_SRC:%.c=$(OUT)/obj/%.o) $(TEST_HELP_OBJ) $(BENCH_SRC:%.c=$(OUT)/obj/%.o) \
    $(LIB_SRC:%.c=$(FUZZ_OUT)/obj/%.o) $(CLI_SRC:%.c=$(FUZZ_OUT)/obj/%.o))

.PHONY: all test tests bench fuzz install check-install clean FORCE
.SECONDARY:
