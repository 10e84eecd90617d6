# Builds and installs the C library: the header, libsockasync.so.<version> with its
# soname link libsockasync.so.<major> and the link libsockasync.so, the static library
# libsockasync.a, and a pkg-config file sockasync.pc.
#   make                                        (cargo build --release, + soname link)
#   make install PREFIX=/usr DESTDIR=/tmp/stage (what a package would contain)
#   make uninstall PREFIX=/usr DESTDIR=/tmp/stage
# Then: cc app.c $$(pkg-config --cflags --libs sockasync)
# (cargo-c users get the same files from `cargo cinstall`, set up in Cargo.toml.)
PREFIX       ?= /usr/local
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR      ?=
CARGO        ?= cargo

# The header's version macros equal Cargo's version (tests/packaging/run.sh checks it).
version_part = $(shell sed -n 's/^\#define SOCKASYNC_VERSION_$(1) //p' include/sockasync.h)
MAJOR   := $(call version_part,MAJOR)
VERSION := $(MAJOR).$(call version_part,MINOR).$(call version_part,PATCH)
BUILT   := target/release

# The soname link lets programs linked against target/release run from there.
all:
	$(CARGO) build --release
	ln -sf libsockasync.so $(BUILT)/libsockasync.so.$(MAJOR)

# Built only if missing: `make install` run as another user (sudo) need not have cargo.
$(BUILT)/libsockasync.so $(BUILT)/libsockasync.a:
	$(CARGO) build --release

build/sockasync.pc: sockasync.pc.in include/sockasync.h
	@mkdir -p build
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' $< >$@

# The .pc file depends on PREFIX and friends: always written afresh.
.PHONY: build/sockasync.pc

install: $(BUILT)/libsockasync.so $(BUILT)/libsockasync.a build/sockasync.pc
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 include/sockasync.h $(DESTDIR)$(INCLUDEDIR)/sockasync.h
	install -m 755 $(BUILT)/libsockasync.so $(DESTDIR)$(LIBDIR)/libsockasync.so.$(VERSION)
	ln -sf libsockasync.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libsockasync.so.$(MAJOR)
	ln -sf libsockasync.so.$(MAJOR) $(DESTDIR)$(LIBDIR)/libsockasync.so
	install -m 644 $(BUILT)/libsockasync.a $(DESTDIR)$(LIBDIR)/libsockasync.a
	install -m 644 build/sockasync.pc $(DESTDIR)$(PKGCONFIGDIR)/sockasync.pc

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/sockasync.h $(DESTDIR)$(PKGCONFIGDIR)/sockasync.pc \
	    $(DESTDIR)$(LIBDIR)/libsockasync.so.$(VERSION) \
	    $(DESTDIR)$(LIBDIR)/libsockasync.so.$(MAJOR) $(DESTDIR)$(LIBDIR)/libsockasync.so \
	    $(DESTDIR)$(LIBDIR)/libsockasync.a

.PHONY: all install uninstall
