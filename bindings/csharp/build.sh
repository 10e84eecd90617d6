#!/usr/bin/env bash
# Builds the C# binding with Mono's compiler (Debian: mono-mcs) into build/csharp/:
# SockAsync.dll (+ SockAsync.dll.config, which maps the library to libsockasync.so.0),
# the tests SockAsyncTests.exe and ExitChild.exe, and the example Echo.exe.
#   bash bindings/csharp/build.sh
# Run them with the library on the loader's path, e.g.
#   LD_LIBRARY_PATH=target/release mono build/csharp/SockAsyncTests.exe
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(cd "$here/../.." && pwd)/build/csharp
mkdir -p "$out"
# C# 7.2 is as far as mcs goes; the sources stay within it (and build on modern .NET).
mcs=(mcs -langversion:7.2 -warnaserror+ -nologo)
"${mcs[@]}" -target:library -out:"$out/SockAsync.dll" "$here"/src/*.cs
cp "$here/SockAsync.dll.config" "$out/"
"${mcs[@]}" -target:exe -r:"$out/SockAsync.dll" -out:"$out/SockAsyncTests.exe" "$here/tests/SockAsyncTests.cs"
"${mcs[@]}" -target:exe -r:"$out/SockAsync.dll" -out:"$out/ExitChild.exe" "$here/tests/ExitChild.cs"
"${mcs[@]}" -target:exe -r:"$out/SockAsync.dll" -out:"$out/Echo.exe" "$here/examples/Echo.cs"
