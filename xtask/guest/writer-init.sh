#!/bin/busybox sh
# /init of the `cargo xtask guest-image` initramfs: a guest that only runs migtrace's
# built-in writer, for tests that watch a real QEMU from the host (tests/qemu.rs).
#
# The writer's arguments come from the kernel command line, commas for spaces:
#   migtrace.writer=--pattern,random,--rate-mib,40,--wss-mib,128
# Lines for the host start with "MIGTRACE-GUEST-"; the writer's own lines are prefixed
# "writer| ". When the writer exits the guest powers off.
export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root TMPDIR=/tmp

/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp
mount -t tmpfs tmpfs /tmp

now() { cut -d' ' -f1 /proc/uptime; }
args=
for word in $(cat /proc/cmdline); do
    case "$word" in
        migtrace.writer=*) args=$(echo "${word#migtrace.writer=}" | tr , ' ') ;;
    esac
done
echo
echo "MIGTRACE-GUEST-BOOTED kernel=$(uname -r) uptime=$(now) mem_kib=$(sed -n 's/MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo)"
if [ -n "$args" ]; then
    echo "MIGTRACE-GUEST-WRITER-START args=$args"
    # shellcheck disable=SC2086 # word splitting of the arguments is wanted
    # A shell loop, not sed: busybox sed buffers its output and the host would wait.
    migtrace writer $args 2>&1 | while IFS= read -r line; do echo "writer| $line"; done
    echo "MIGTRACE-GUEST-WRITER-EXIT uptime=$(now)"
else
    echo "MIGTRACE-GUEST-IDLE no migtrace.writer= on the kernel command line"
    while :; do sleep 3600; done
fi
echo o > /proc/sysrq-trigger
sleep 10
