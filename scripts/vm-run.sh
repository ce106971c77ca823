#!/usr/bin/env bash
# Runs a command as root under another Linux kernel: Debian's, booted in
# QEMU with this machine's root file system underneath a throwaway overlay.
#
#   scripts/vm-run.sh COMMAND [ARGS...]
#
# Why: some kernels that run the tests lack features the reference plugins
# use, such as bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING) and
# 802.1Q devices. Debian's distribution kernel has them, and the VM's kernel
# is a real one: links, bridges and netfilter behave as on any node.
#
# The command runs in the current directory with the CNIWASM_*, RUST_* and
# PATH variables of the caller. Its output is printed and its exit status
# returned. Writes stay in the VM's memory: the host's files are read-only
# below the overlay. The VM has no network device, so its traffic cannot
# leave it.
#
# Needs: qemu-system-x86, linux-image-amd64, busybox-static and cpio
# (scripts/setup.sh installs them). Set CNIWASM_VM_KERNEL to pick a
# /boot/vmlinuz-* image other than the newest one.
set -euo pipefail

if (($# == 0)); then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi

kernel=${CNIWASM_VM_KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
if [[ -z $kernel || ! -r $kernel ]]; then
  echo "vm-run: no kernel image in /boot; run scripts/setup.sh as root to install linux-image-amd64" >&2
  exit 2
fi
release=${kernel#/boot/vmlinuz-}
if [[ ! -d /lib/modules/$release ]]; then
  echo "vm-run: /lib/modules/$release is missing; reinstall the package of $kernel" >&2
  exit 2
fi
for tool in qemu-system-x86_64 cpio /bin/busybox; do
  if ! command -v "$tool" >/dev/null; then
    echo "vm-run: $tool is missing; run scripts/setup.sh as root" >&2
    exit 2
  fi
done

work=$(mktemp -d /tmp/cniwasm-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The command, its directory and environment, for the second stage to run.
{
  echo "cd $(printf '%q' "$PWD")"
  env | grep -E '^(CNIWASM_[A-Z0-9_]*|RUST_[A-Z0-9_]*|PATH)=' | while IFS= read -r line; do
    echo "export ${line%%=*}=$(printf '%q' "${line#*=}")"
  done
  printf 'exec'
  printf ' %q' "$@"
  echo
} >"$work/command.sh"

# The first stage: load what mounting the host's root over 9p takes, put a
# tmpfs overlay on it and switch to it.
initramfs=$work/initramfs
mkdir -p "$initramfs"/{bin,modules,stages,proc,sys,dev,lower,upper,newroot}
cp /bin/busybox "$initramfs/bin/busybox"
modprobe -S "$release" --show-depends -a virtio_pci 9pnet_virtio 9p overlay |
  awk '$1 == "insmod" && !seen[$2]++ { print $2 }' >"$work/modules"
while IFS= read -r module; do
  cp "$module" "$initramfs/modules/"
  basename "$module" >>"$initramfs/modules/order"
done <"$work/modules"

cat >"$initramfs/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for module in $(cat /modules/order); do insmod "/modules/$module" || echo "vm-run: insmod $module failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /lower
mount -t tmpfs -o size=80% upper /upper
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work root /newroot
# /run is a tmpfs on most hosts, so 9p shows it empty: the stages go into
# the overlay from here.
mkdir -p /newroot/run/cniwasm-vm
cp /stages/* /newroot/run/cniwasm-vm/
exec switch_root /newroot /bin/sh /run/cniwasm-vm/stage2.sh
EOF
chmod +x "$initramfs/init"

# The second stage, in the host's tree: fresh kernel file systems, then the
# command, then the exit status on the console for this script to read.
# /tmp gets no tmpfs, because the command may live there (a clone made with
# mktemp -d), and the overlay keeps the VM's writes to it in memory anyway.
cp "$work/command.sh" "$initramfs/stages/command.sh"
cat >"$initramfs/stages/stage2.sh" <<'EOF'
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs shm /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || true
ip link set lo up
echo "cniwasm-vm: running"
sh /run/cniwasm-vm/command.sh &
command=$!
# A command still running after the watchdog delay (seconds) gets its
# processes and their kernel stacks printed, to show where it waits.
(
  sleep "$(cat /run/cniwasm-vm/watchdog)"
  echo "cniwasm-vm: still running; processes and kernel stacks follow"
  for dir in /proc/[0-9]*; do
    command_line=$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null | cut -c1-160)
    [ -n "$command_line" ] || continue
    echo "--- process ${dir#/proc/}: $command_line"
    for task in "$dir"/task/*; do
      echo "thread ${task##*/} [$(cat "$task/wchan" 2>/dev/null)]"
      cat "$task/stack" 2>/dev/null
    done
  done
  dmesg | tail -n 40
) &
watchdog=$!
wait "$command"
status=$?
kill "$watchdog" 2>/dev/null
echo "cniwasm-vm: exit status $status"
/bin/busybox poweroff -f
EOF
echo "${CNIWASM_VM_WATCHDOG:-600}" >"$initramfs/stages/watchdog"

(cd "$initramfs" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.gz"

# TCG, not KVM: on the test machines seen so far /dev/kvm exists but a KVM
# guest hangs after the kernel is decompressed. TCG is slower but works.
memory=${CNIWASM_VM_MEMORY:-4G}
: >"$work/console"
# A command that hangs must fail the run rather than stall it: after the
# limit (seconds) QEMU is stopped, and no exit status is read.
timeout "${CNIWASM_VM_TIMEOUT:-1200}" qemu-system-x86_64 \
  -accel tcg,thread=multi -cpu max -smp "$(nproc)" -m "$memory" \
  -nographic -no-reboot -nic none \
  -kernel "$kernel" -initrd "$work/initramfs.gz" \
  -append "console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
  </dev/null | stdbuf -oL tr -d '\r' >"$work/console" &
qemu=$!

# Show the command's output as it comes, without the firmware's and the
# kernel's start-up lines before it.
# sed -u reads and writes line by line, where mawk would wait for a full
# input buffer.
tail -n +1 -f --pid "$qemu" "$work/console" | sed -u -n '1,/cniwasm-vm: running$/d; p'
wait "$qemu" || true

status=$(sed -n 's/^.*cniwasm-vm: exit status \([0-9]*\)$/\1/p' "$work/console" | tail -n 1)
if [[ -z $status ]]; then
  cat "$work/console" >&2
  echo "vm-run: the VM stopped before the command finished; its console is above" >&2
  exit 125
fi
exit "$status"
