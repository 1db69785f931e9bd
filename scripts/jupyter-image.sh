#!/usr/bin/env bash
# Makes the root file system of a small JupyterLab image from this host's files, for the tests of JupyterLab in a
# container (no registry or Debian mirror is needed): busybox's applets, the host's python3 with its standard
# library, the JupyterLab virtual environment scripts/test.sh installs (at the same path, so its scripts' #! lines
# hold), and exactly the shared libraries those binaries and extension modules link (found with ldd).
#
#   scripts/jupyter-image.sh VENV OUT.tar      e.g. scripts/jupyter-image.sh /opt/canopy-test/jupyter /tmp/jupyter-rootfs.tar
#
# Import it with `canopy images import OUT.tar --name NAME`; JupyterLab is then VENV/bin/jupyter in the image.
set -euo pipefail
venv=${1:?usage: scripts/jupyter-image.sh VENV OUT.tar}
out=${2:?usage: scripts/jupyter-image.sh VENV OUT.tar}
python=$(readlink -f "$venv/bin/python3")
stdlib=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
dynload=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["platstdlib"])')/lib-dynload

R=$(mktemp -d /tmp/canopy-jupyter-rootfs.XXXXXX)
trap 'rm -rf "$R"' EXIT
mkdir -p "$R/bin" "$R/tmp" "$R/etc" "$R/root" "$R/home" "$R/usr/bin" "$R/usr/lib" "$R/usr/lib64"
chmod 1777 "$R/tmp"
# Debian's merged /usr, as the copied libraries' paths expect it.
ln -s usr/lib "$R/lib"
ln -s usr/lib64 "$R/lib64"
cp "$(command -v busybox)" "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"

# The interpreter under its own path and the name the venv's python3 link points at.
mkdir -p "$R$(dirname "$python")"
cp "$python" "$R$python"
[ -e "$R/usr/bin/python3" ] || ln -s "$(basename "$python")" "$R/usr/bin/python3"
# The standard library without its tests, and the venv as it is.
mkdir -p "$R$stdlib" "$R$venv"
tar -C "$stdlib" --exclude='./test' --exclude='./idlelib' --exclude='./tkinter' --exclude='*/__pycache__' -cf - . | tar -C "$R$stdlib" -xf -
[ -d "$R$dynload" ] || { mkdir -p "$R$dynload"; cp -a "$dynload/." "$R$dynload/"; }
cp -a "$venv/." "$R$venv/"

# Every shared library the interpreter and the extension modules need, copied to its resolved path and linked
# under the name it was asked by (so the loader finds both).
{
    echo "$python"
    find "$R$dynload" "$R$venv" -name '*.so*' -type f | sed "s|^$R||"
} | while read -r elf; do
    ldd "$elf" 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}'
done | sort -u | while read -r lib; do
    real=$(readlink -f "$lib")
    mkdir -p "$R$(dirname "$real")"
    [ -e "$R$real" ] || cp "$real" "$R$real"
    if [ "$lib" != "$real" ] && [ ! -e "$R$lib" ]; then
        mkdir -p "$R$(dirname "$lib")"
        ln -s "$real" "$R$lib"
    fi
done
tar -C "$R" -cf "$out" .
echo "jupyter-image: $out ($(du -h "$out" | cut -f1)), JupyterLab at $venv/bin/jupyter"
