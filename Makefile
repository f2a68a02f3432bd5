# mor - Mixture-of-Recursions toolkit.
#   make              lib/libmor.so, lib/libmor.a, bin/mor-*
#   make test         build and run the cmocka suites (tests/test_*.c)
#   make SAN=1 OUT=build/san test   the same under ASan + UBSan, out of tree
#   make install PREFIX=/usr/local
#   make fuzz FUZZ_SECONDS=N   libFuzzer harnesses (clang, ASan + UBSan), N s each
CC      ?= cc
OUT     ?= .
PREFIX  ?= /usr/local
BLASDIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp

WARN    = -Wall -Wextra -Wno-unused-parameter -Wshadow -Wstrict-prototypes
OPT     = -O2 -march=x86-64-v3 -mtune=native -fno-math-errno
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -fPIC -fopenmp $(WARN) -Ilib
LDLIBS  = -L$(BLASDIR) -Wl,-rpath,$(BLASDIR) -lopenblas -lyaml -lzstd -ljansson -lpcre2-8 -lutf8proc -lm -fopenmp
ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

LIB_SRC  = $(sort $(wildcard lib/*.c))
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

all: $(LIBA) $(LIBSO) $(BINS)

$(OUT)/obj/%.o: %.c $(wildcard lib/*.h cmd/*.h tests/*.h bench/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Icmd -c $< -o $@

$(LIBA): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBSO): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(OUT)/bin/%: $(OUT)/obj/cmd/%.o $(CLI_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(CLI_OBJ) $(LIBA) $(LDLIBS)

$(OUT)/bin/tests/%: $(OUT)/obj/tests/%.o $(TEST_HELP_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(TEST_HELP_OBJ) $(LIBA) $(LDLIBS) -lcmocka

$(OUT)/bin/bench/%: $(OUT)/obj/bench/%.o $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBA) $(LDLIBS)

tests: $(TESTS)

# Benchmarks: bin/bench/*; the scripts in bench/ run them (bench/README.md).
bench: all $(BENCHES)

# Each suite runs from the repository root with MOR_BIN pointing at the tools.
test: all $(TESTS)
	@MOR_BIN=$(OUT)/bin OUT=$(OUT) bash tests/run.sh $(TESTS)

# Fuzzing (tests/fuzz/README.md): the library and cmd/ objects built again with
# clang and coverage for libFuzzer, under ASan + UBSan, out of tree in
# FUZZ_OUT; one binary per harness tests/fuzz/fuzz_*.c; tests/fuzz/run.sh runs
# each for FUZZ_SECONDS over its seeds and regression inputs.
FUZZ_CC      ?= clang
FUZZ_OUT     ?= build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS  = -O1 -g -std=c11 -D_GNU_SOURCE -fopenmp $(WARN) -Ilib -Icmd -fno-omit-frame-pointer \
               -fsanitize=address,undefined -fno-sanitize-recover=undefined -Wno-pass-failed
FUZZ_SRC     = $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS    = $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_OUT)/bin/%)
FUZZ_LIBA    = $(FUZZ_OUT)/libmor-fuzz.a

$(FUZZ_OUT)/obj/%.o: %.c $(wildcard lib/*.h cmd/*.h)
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
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	    $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin
	install -m 644 $(LIBA) $(LIBSO) $(DESTDIR)$(PREFIX)/lib
	install -m 644 lib/mor.h $(DESTDIR)$(PREFIX)/include
	install -m 644 $(wildcard man/*.1) $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 644 $(wildcard man/*.5) $(DESTDIR)$(PREFIX)/share/man/man5

clean:
	rm -rf $(OUT)/obj $(OUT)/bin $(LIBA) $(LIBSO)

.PHONY: all test tests bench fuzz install clean
.SECONDARY:
