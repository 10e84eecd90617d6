#!/usr/bin/env bash
# The packaging checks (a step of scripts/test.sh; expects `cargo build --release` done):
# - the header's SOCKASYNC_VERSION_* macros equal Cargo's version, and so do the C#
#   binding's assembly version and the soname it loads;
# - the header compiles cleanly as C99, C11, C++11 and C++17 (-Wall -Wextra -Werror
#   -pedantic), and a program built from it as C++ links (the extern "C" guards) and runs;
# - the shared library's soname is libsockasync.so.<major>, and it exports exactly the
#   functions the header declares;
# - the C# binding's DllImports name header functions with their numbers of parameters;
# - `make install PREFIX=/usr/local DESTDIR=<temporary>` installs the header, both libraries
#   with their links, and sockasync.pc; the C examples build from that installed copy with
#   `pkg-config --cflags --libs sockasync` (echo_server against the shared library,
#   echo_client against the static one), and the two echo to each other over loopback;
# - `make uninstall` removes every installed file.
# Ends with "packaging: N passed, N failed".
# No `grep -q` after a pipe: it stops reading at the first match, and with pipefail the
# writer's SIGPIPE would fail the check now and then.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

passed=0
failed=0
check() {
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
    echo "  ok   $name"
  else
    failed=$((failed + 1))
    echo "  FAIL $name"
  fi
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

header_macro() {
  sed -n "s/^#define SOCKASYNC_VERSION_$1 //p" include/sockasync.h
}
cargo_version=$(cargo metadata --no-deps --format-version 1 --offline |
  sed -n 's/.*"name":"sockasync","version":"\([^"]*\)".*/\1/p')
header_version="$(header_macro MAJOR).$(header_macro MINOR).$(header_macro PATCH)"
major=$(header_macro MAJOR)
version_macros_match() {
  echo "     Cargo.toml $cargo_version, header $header_version"
  [ -n "$cargo_version" ] && [ "$cargo_version" = "$header_version" ]
}
check "header version macros equal Cargo's version" version_macros_match

csharp_versions_match() {
  grep -q "AssemblyVersion(\"$cargo_version.0\")" bindings/csharp/src/AssemblyInfo.cs &&
    grep -q "SoVersion = $major;" bindings/csharp/src/Native.cs &&
    grep -q "target=\"libsockasync.so.$major\"" bindings/csharp/SockAsync.dll.config
}
check "the C# binding's assembly version and soname follow Cargo's version" csharp_versions_match

# $1: the language (c or c++), $2: the standard.
header_compiles_and_runs() {
  local compiler=gcc
  [ "$1" = c++ ] && compiler=g++
  "$compiler" -x "$1" -std="$2" -Wall -Wextra -Werror -pedantic -Iinclude \
    tests/packaging/header_check.c -x none -Ltarget/release \
    -Wl,-rpath,"$root/target/release" -lsockasync -o "$work/header_check" &&
    [ "$("$work/header_check")" = "$cargo_version" ]
}
check "header as C99" header_compiles_and_runs c c99
check "header as C11" header_compiles_and_runs c c11
check "header as C++11 (links through the extern \"C\" guards)" header_compiles_and_runs c++ c++11
check "header as C++17" header_compiles_and_runs c++ c++17

soname_is() {
  readelf -d "$1" | grep "(SONAME).*\[libsockasync\.so\.$major\]" >/dev/null
}
check "target/release/libsockasync.so has the soname libsockasync.so.$major" \
  soname_is target/release/libsockasync.so

# The header's function prototypes, one a line (cbindgen wraps long ones over several).
prototypes() {
  awk '/^[a-z].*[ *]sock_[a-z0-9_]+\(/ {
    line = $0
    while (line !~ /\);$/ && (getline more) > 0) {
      sub(/^[ \t]+/, " ", more)
      line = line more
    }
    print line }' include/sockasync.h
}

# The ABI is what the header declares: the library exports exactly those functions.
exports_are_the_header() {
  prototypes |
    sed -E 's/.*[ *](sock_[a-z0-9_]+)\(.*/\1/' | sort >"$work/declared"
  nm -D --defined-only target/release/libsockasync.so | awk '{print $3}' | sort >"$work/exported"
  echo "     $(wc -l <"$work/declared") functions declared, $(wc -l <"$work/exported") symbols exported"
  diff "$work/declared" "$work/exported"
}
check "the shared library exports exactly the functions the header declares" exports_are_the_header

# "name arity" for each function: a P/Invoke declaration with a wrong name fails only when
# it is first called (EntryPointNotFoundException), a wrong arity corrupts the call.
signatures() {
  sed -E 's/^.*[ *](sock_[a-z0-9_]+)\((.*)\).*$/\1 \2/' | awk '{
    name = $1; $1 = ""; args = $0; gsub(/ /, "", args)
    n = (args == "" || args == "void") ? 0 : gsub(/,/, ",", args) + 1
    print name, n }' | sort
}
csharp_imports_match_the_header() {
  prototypes | signatures >"$work/c-signatures"
  grep -E 'static extern .* sock_[a-z0-9_]+\(' bindings/csharp/src/Native.cs | signatures \
    >"$work/cs-signatures"
  echo "     $(wc -l <"$work/cs-signatures") of the header's functions are imported by the C# binding"
  [ -s "$work/cs-signatures" ] && ! comm -23 "$work/cs-signatures" "$work/c-signatures" | grep .
}
check "every C# DllImport names a header function, with its number of parameters" \
  csharp_imports_match_the_header

stage=$work/stage
prefix=/usr/local
lib=$stage$prefix/lib
installed_files() {
  make -s install PREFIX=$prefix DESTDIR="$stage" >"$work/install.log" 2>&1 || {
    cat "$work/install.log"
    return 1
  }
  [ -f "$stage$prefix/include/sockasync.h" ] &&
    cmp -s include/sockasync.h "$stage$prefix/include/sockasync.h" &&
    [ -f "$lib/libsockasync.so.$header_version" ] &&
    [ "$(readlink "$lib/libsockasync.so.$major")" = "libsockasync.so.$header_version" ] &&
    [ "$(readlink "$lib/libsockasync.so")" = "libsockasync.so.$major" ] &&
    [ -f "$lib/libsockasync.a" ] && [ -f "$lib/pkgconfig/sockasync.pc" ] &&
    soname_is "$lib/libsockasync.so.$header_version"
}
check "make install DESTDIR=...: header, libraries, links, sockasync.pc" installed_files

# pkg-config reads the staged .pc, and puts the stage in front of its paths.
pc() {
  PKG_CONFIG_LIBDIR=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$stage pkg-config "$@" sockasync
}
pkg_config_names_the_stage() {
  local cflags libs
  cflags=$(pc --cflags | xargs)
  libs=$(pc --libs | xargs)
  echo "     pkg-config --cflags --libs: $cflags $libs"
  [ "$(pc --modversion)" = "$cargo_version" ] &&
    [ "$cflags" = "-I$stage$prefix/include" ] && [ "$libs" = "-L$lib -lsockasync" ]
}
check "pkg-config finds the installed copy" pkg_config_names_the_stage

# No -Iinclude, no target/release: only what pkg-config says.
examples_build_from_the_installed_copy() {
  local flags=(-std=c11 -Wall -Wextra -Werror -O2 -pthread)
  local static_libs
  static_libs=$(pc --libs --static | sed 's/-lsockasync/-l:libsockasync.a/')
  # shellcheck disable=SC2046 # pkg-config's output is meant to be split into words
  cc "${flags[@]}" $(pc --cflags) -o "$work/echo_server" examples-c/echo_server.c \
    $(pc --libs) -pthread &&
    cc "${flags[@]}" $(pc --cflags) -o "$work/echo_client" examples-c/echo_client.c \
      $static_libs -pthread &&
    LD_LIBRARY_PATH=$lib ldd "$work/echo_server" | grep "libsockasync.so.$major => $lib/" >/dev/null &&
    ! ldd "$work/echo_client" | grep libsockasync
}
check "C examples build with pkg-config (server shared, client static)" \
  examples_build_from_the_installed_copy

# The demo's own script, with the installed builds in place of its own (its output only
# if it fails: its "N passed" line is not this script's count).
installed_examples_echo() {
  LD_LIBRARY_PATH=$lib DEMO_SERVER=$work/echo_server DEMO_CLIENT=$work/echo_client \
    bash examples-c/run-demo.sh >"$work/demo.log" 2>&1 || {
    sed 's/^/     | /; s/passed/ok/g; s/failed/not ok/g' "$work/demo.log"
    return 1
  }
}
check "installed echo_server and echo_client echo over 127.0.0.1 (the echo demo)" \
  installed_examples_echo

uninstall_removes_everything() {
  make -s uninstall PREFIX=$prefix DESTDIR="$stage" >/dev/null &&
    [ -z "$(find "$stage" -not -type d)" ]
}
check "make uninstall removes every installed file" uninstall_removes_everything

echo "packaging: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
