# Included by every Makefile that links C programs against the release build of the
# library (tests/c, examples-c, benches); ROOT must be set first.
#
# The shared library carries the soname libsockasync.so.<major> (build.rs), so programs
# linked against it look for that name at run time; cargo leaves only libsockasync.so in
# target/release, so the soname link is made beside it.
LIBDIR    := $(ROOT)/target/release
SOVERSION := $(shell sed -n 's/^\#define SOCKASYNC_VERSION_MAJOR //p' $(ROOT)/include/sockasync.h)
LIBRARY   := $(LIBDIR)/libsockasync.so.$(SOVERSION)

# The rules below are not what a plain `make` should build.
.DEFAULT_GOAL := all

$(LIBRARY): $(LIBDIR)/libsockasync.so
	ln -sf libsockasync.so $@

$(LIBDIR)/libsockasync.so:
	@echo "$@ is missing: run 'cargo build --release' in $(ROOT) first" >&2
	@exit 1
