# tools/vm/lib.sh: the kernel, QEMU and initramfs recipe shared by
# tools/vm/e2e and bench/vm (sourced, not run).
#
# The caller sets ROOT (the repository) and CACHE (where downloads and
# unpacked packages are kept between runs) and defines two functions:
#   say MSG...       progress line
#   die_prep MSG...  could not prepare: print and exit
# Everything here is cached under $CACHE and fetched with apt-get download
# (refreshing the package lists once if they are stale); nothing is installed
# on the host except through tools/install-deps.

# apt_download DIR PKG...: the .deb files of PKG into DIR.
apt_download() {
  local dir="$1"; shift
  ( cd "$dir" && apt-get -q -o APT::Sandbox::User=root download "$@" >/dev/null 2>"$dir/apt.err" ) && return 0
  say "apt-get download $* failed; running apt-get update once"
  apt-get -q update >/dev/null 2>&1 || true
  ( cd "$dir" && apt-get -q -o APT::Sandbox::User=root download "$@" >/dev/null 2>"$dir/apt.err" ) \
    || die_prep "apt-get download $* failed: $(tail -n 2 "$dir/apt.err" | tr '\n' ' ')"
}

# vm_host_tools CMD:PKG...: runs tools/install-deps once if a command is
# missing on the host, then dies naming the packages still missing.
vm_host_tools() {
  local want=("cpio:cpio" "gzip:gzip" "strip:binutils" "strings:binutils" "xz:xz-utils"
    "flock:util-linux" "timeout:coreutils" "dpkg-deb:dpkg" "apt-get:apt" "$@")
  local missing pass
  for pass in 1 2; do
    missing=()
    local w
    for w in "${want[@]}"; do command -v "${w%%:*}" >/dev/null 2>&1 || missing+=("${w#*:}"); done
    # busybox-static: /bin/busybox without shared libraries
    { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || missing+=(busybox-static)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ $pass = 1 ] || break
    say "missing on the host: ${missing[*]}; running tools/install-deps"
    "$ROOT/tools/install-deps" >&2 || true
  done
  die_prep "missing Debian packages: ${missing[*]} (install them, e.g. with tools/install-deps as root)"
}

# vm_kernel: the Debian cloud kernel (linux-image-cloud-amd64 and the
# versioned package it depends on), kept as its .deb under $CACHE/kernel.
# Sets KDIR, KVER ("PKG MODULE-DIR-NAME") and KDEB.
vm_kernel() {
  KDIR="$CACHE/kernel"
  if [ ! -s "$KDIR/vmlinuz" ] || [ ! -s "$KDIR/version" ] || [ ! -s "$KDIR/image.deb" ]; then
    say "preparing the kernel (linux-image-cloud-amd64) under $KDIR"
    local tmp="$CACHE/tmp.kernel" meta dep mdir
    rm -rf "$tmp" "$KDIR"; mkdir -p "$tmp/debs" "$tmp/x"
    apt_download "$tmp/debs" linux-image-cloud-amd64
    meta=$(ls "$tmp"/debs/linux-image-cloud-amd64_*.deb)
    dep=$(dpkg-deb -f "$meta" Depends | tr ',' '\n' | grep -o 'linux-image-[0-9][^ ]*' | head -n1)
    [ -n "$dep" ] || die_prep "cannot read the versioned kernel package from $meta"
    apt_download "$tmp/debs" "$dep"
    dpkg-deb -x "$tmp"/debs/"$dep"_*.deb "$tmp/x"
    mkdir -p "$KDIR.new"
    cp "$tmp"/x/boot/vmlinuz-* "$KDIR.new/vmlinuz" || die_prep "no boot/vmlinuz-* in $dep"
    mdir=$(ls -d "$tmp"/x/lib/modules/*/ | head -n1)
    echo "$dep $(basename "$mdir")" > "$KDIR.new/version"
    mv "$tmp"/debs/"$dep"_*.deb "$KDIR.new/image.deb"
    mv "$KDIR.new" "$KDIR"; rm -rf "$tmp"
  fi
  KVER=$(cat "$KDIR/version")
  KDEB="$KDIR/image.deb"
}

# vm_modules DEST MOD...: each module and the modules it depends on
# (modinfo's depends=), uncompressed into DEST, and DEST/order listing them
# in load order. Needs vm_kernel first.
vm_modules() {
  local dest="$1"; shift
  local x="$CACHE/kernel/x"
  if [ ! -d "$x/lib/modules" ]; then
    rm -rf "$x.new"; mkdir -p "$x.new"
    dpkg-deb -x "$KDEB" "$x.new" && mv "$x.new" "$x" || die_prep "cannot unpack $KDEB"
  fi
  local mdir; mdir=$(ls -d "$x"/lib/modules/*/ | head -n1)
  mkdir -p "$dest"
  local load=()
  _vm_add_mod() {
    local name="$1" f deps d
    f=$(find "$mdir/kernel" \( -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" \) | head -n1)
    [ -n "$f" ] || die_prep "module $name not found in $KVER"
    case "$f" in
      *.xz) xz -dc "$f" > "$dest/$name.ko" ;;
      *.zst) zstd -qdc "$f" > "$dest/$name.ko" ;;
      *) cp "$f" "$dest/$name.ko" ;;
    esac
    deps=$(strings "$dest/$name.ko" | sed -n 's/^depends=//p' | head -n1)
    for d in ${deps//,/ }; do
      [[ " ${load[*]} " == *" $d "* ]] || _vm_add_mod "$d"
    done
    load+=("$name")
  }
  local m
  for m in "$@"; do [[ " ${load[*]} " == *" $m "* ]] || _vm_add_mod "$m"; done
  printf '%s\n' "${load[@]}" > "$dest/order"
}

# vm_qemu: sets QEMU and QEMU_L (extra -L arguments), and exports
# QEMU_MODULE_DIR when QEMU runs from the cache.
#
# bookworm's qemu-system-x86 (7.2) cannot be installed next to the image's
# newer qemu-utils backport (it Breaks qemu-system-common < 8.0) and apt would
# downgrade or remove qemu-utils, which the other tests use. So unless a
# qemu-system-x86_64 is already installed, the package is unpacked here and run
# from the cache; tools/install-deps installs the libraries it links.
vm_qemu() {
  QEMU_L=()
  if command -v qemu-system-x86_64 >/dev/null 2>&1; then
    QEMU=$(command -v qemu-system-x86_64)
  else
    local QDIR="$CACHE/qemu" tmp d
    if [ ! -x "$QDIR/usr/bin/qemu-system-x86_64" ] || [ ! -e "$QDIR/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so" ]; then
      say "preparing qemu-system-x86 (unpacked under $QDIR)"
      tmp="$CACHE/tmp.qemu"; rm -rf "$tmp" "$QDIR" "$QDIR.new"; mkdir -p "$tmp"
      apt_download "$tmp" qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu
      mkdir -p "$QDIR.new"
      for d in "$tmp"/*.deb; do dpkg-deb -x "$d" "$QDIR.new"; done
      mv "$QDIR.new" "$QDIR"; rm -rf "$tmp"
    fi
    QEMU="$QDIR/usr/bin/qemu-system-x86_64"
    # TCG itself is a loadable module in Debian's build (accel-tcg-x86_64.so).
    export QEMU_MODULE_DIR="$QDIR/usr/lib/x86_64-linux-gnu/qemu"
    QEMU_L=(-L "$QDIR/usr/share/seabios" -L "$QDIR/usr/share/qemu" -L "$QDIR/usr/lib/ipxe/qemu")
  fi
  if [ -n "$(ldd "$QEMU" 2>/dev/null | grep 'not found')" ]; then "$ROOT/tools/install-deps" >&2 || true; fi
  local missing_libs
  missing_libs=$(ldd "$QEMU" ${QEMU_MODULE_DIR:+"$QEMU_MODULE_DIR/accel-tcg-x86_64.so"} 2>/dev/null | awk '/not found/ {print $1}' | tr '\n' ' ')
  [ -z "$missing_libs" ] || die_prep "$QEMU lacks shared libraries: $missing_libs(tools/install-deps installs them)"
}

# add_bin STAGE SRC [DEST]: copies a binary and every library ldd lists for
# it into the staging tree.
add_bin() {
  local stage="$1" src="$2" dest="${3:-$2}" lib
  mkdir -p "$stage$(dirname "$dest")"
  cp -L "$src" "$stage$dest"
  for lib in $(ldd "$src" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    if [ ! -e "$stage$lib" ]; then
      mkdir -p "$stage$(dirname "$lib")"
      cp -L "$lib" "$stage$lib"
    fi
  done
}

# busybox_tree STAGE: the directories of a minimal root and busybox with a
# link per applet (except those in the extra arguments, which come from
# real packages).
busybox_tree() {
  local st="$1" a; shift
  mkdir -p "$st"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,mnt,lib/modules}
  cp /bin/busybox "$st/bin/busybox"
  for a in $(/bin/busybox --list); do
    case " busybox $* " in *" $a "*) continue ;; esac
    ln -s busybox "$st/bin/$a"
  done
}

# pack DIR GZIP-LEVEL: the tree as a newc cpio archive, gzip'd, on stdout.
pack() { ( cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 ) | gzip "$2"; }

# vm_boot TIMEOUT MEM SMP INITRD LOG FILTER: boots the kernel with the
# initramfs (TCG), the console into LOG, the lines matching the extended
# regex FILTER on stdout; VM_QEMU_EXTRA (an array, if set) adds QEMU options. Sets VM_RC (qemu's exit, 124/137 when timed out).
vm_boot() {
  local timeout="$1" mem="$2" smp="$3" initrd="$4" log="$5" filter="$6"
  mkdir -p "$(dirname "$log")"
  : > "$log"
  set +e
  timeout -k 10 "$timeout" "$QEMU" "${QEMU_L[@]}" ${VM_QEMU_EXTRA[@]+"${VM_QEMU_EXTRA[@]}"} -machine accel=tcg -cpu max -smp "$smp" -m "$mem" \
    -display none -vga none -nic none -monitor none -serial stdio -no-reboot \
    -kernel "$KDIR/vmlinuz" -initrd "$initrd" \
    -append 'console=ttyS0 panic=-1 quiet' </dev/null 2>&1 \
    | sed -u 's/\r$//' | tee "$log" | grep --line-buffered -E "$filter"
  VM_RC=${PIPESTATUS[0]}
  set -e
}
