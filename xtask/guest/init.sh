#!/bin/busybox sh
# /init of the `cargo xtask vmtest` initramfs (see docs/vmtest.md).
#
# Runs as PID 1 under the Debian guest kernel: mounts the pseudo file systems, probes
# guest-kernel features, runs every test under /vm/tests/ in order, prints one
# machine-readable line per feature and per test on the serial console, then powers off.
# Lines the host parses start with "MIGTRACE-VM-"; test output is prefixed with
# "<test name>| " so a test can never forge such a line.
#
# /vm/tests/NNN/ holds, per test: name, requires (space-separated feature names),
# timeout (seconds) and run.sh (the test's command line). The host writes them.

export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root TMPDIR=/tmp RUST_BACKTRACE=1 MIGTRACE_VM=1

/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /run /root /dev/pts /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null

now() { cut -d' ' -f1 /proc/uptime; }
echo
echo "MIGTRACE-VM-BOOTED kernel=$(uname -r) uptime=$(now)"

: > /tmp/features.yes
feature() { # name status detail...
    name=$1 status=$2
    shift 2
    echo "MIGTRACE-VM-FEATURE name=$name status=$status detail=$*"
    [ "$status" = yes ] && echo "$name" >> /tmp/features.yes
}

# --- mounts that double as feature probes ---
if mount -t tracefs tracefs /sys/kernel/tracing 2>/tmp/err; then
    feature tracefs yes mounted at /sys/kernel/tracing
else
    feature tracefs no "mount -t tracefs: $(cat /tmp/err)"
fi
if mount -t debugfs debugfs /sys/kernel/debug 2>/tmp/err; then
    feature debugfs yes mounted at /sys/kernel/debug
else
    feature debugfs no "mount -t debugfs: $(cat /tmp/err)"
fi
if mount -t bpf bpf /sys/fs/bpf 2>/tmp/err; then
    feature bpffs yes mounted at /sys/fs/bpf
else
    feature bpffs no "mount -t bpf: $(cat /tmp/err)"
fi

# --- kprobes: the control file exists and a probe can really be registered ---
KE=/sys/kernel/tracing/kprobe_events
if [ ! -e $KE ]; then
    feature kprobes no "$KE does not exist"
elif echo 'p:vmtest_probe vfs_read' >> $KE 2>/tmp/err; then
    echo '-:vmtest_probe' >> $KE
    feature kprobes yes "$KE exists, registered and removed p:vfs_read"
else
    feature kprobes no "$KE exists but registering p:vfs_read failed: $(cat /tmp/err)"
fi

# --- BTF ---
if [ -e /sys/kernel/btf/vmlinux ]; then
    feature btf yes "/sys/kernel/btf/vmlinux, $(wc -c < /sys/kernel/btf/vmlinux) bytes"
else
    feature btf no "/sys/kernel/btf/vmlinux does not exist"
fi

# --- nested KVM: only a boot with "nested_kvm" (tests/vm/kvm.json) has the modules ---
if [ -f /vm/kvm/modules ]; then
    failed=
    while IFS= read -r m; do
        insmod "/vm/kvm/$m" 2>/tmp/err || failed="$failed insmod $m: $(cat /tmp/err);"
    done < /vm/kvm/modules
    # Loopback for migrations between inner guests.
    ip link set lo up
    i=0
    while [ ! -c /dev/kvm ] && [ $i -lt 50 ]; do usleep 100000; i=$((i + 1)); done
    flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -x -E 'svm|npt|vgif' | tr '\n' ' ')
    flags=${flags% }
    npt=no
    dmesg | grep -q 'Nested Paging enabled' && npt=yes
    if [ -c /dev/kvm ]; then
        feature kvm yes "/dev/kvm present; cpu flags: ${flags}; kvm_amd nested paging: ${npt}${failed:+; $failed}"
    else
        feature kvm no "/dev/kvm missing;$failed cpu flags: ${flags:-none of svm npt vgif}; $(dmesg | grep -i -E 'kvm|svm' | tail -3 | tr '\n' ' ')"
    fi
else
    feature kvm no "this boot loads no kvm modules (only a nested_kvm boot, tests/vm/kvm.json, does)"
fi

# --- soft-dirty and userfaultfd need system calls: vm-probe does them ---
if command -v vm-probe >/dev/null; then
    vm-probe features > /tmp/probe.out 2>&1
    while IFS= read -r line; do
        case "$line" in
        MIGTRACE-VM-FEATURE\ *)
            echo "$line"
            case "$line" in
            *" status=yes "*)
                n=${line#*name=}
                echo "${n%% *}" >> /tmp/features.yes
                ;;
            esac
            ;;
        *) echo "vm-probe| $line" ;;
        esac
    done < /tmp/probe.out
else
    feature softdirty no "vm-probe is not in the initramfs"
    feature userfaultfd no "vm-probe is not in the initramfs"
fi
echo "MIGTRACE-VM-PROBED uptime=$(now)"

# --- the tests ---
for t in /vm/tests/*/; do
    [ -f "$t/run.sh" ] || continue
    name=$(cat "$t/name")
    timeout=$(cat "$t/timeout")
    missing=""
    for r in $(cat "$t/requires"); do
        grep -qx "$r" /tmp/features.yes || missing="$missing $r"
    done
    if [ -n "$missing" ]; then
        echo "MIGTRACE-VM-RESULT name=$name status=skip rc=- secs=0 reason=guest kernel lacks feature(s):$missing"
        continue
    fi
    echo "MIGTRACE-VM-BEGIN name=$name uptime=$(now)"
    start=$(now)
    rm -f /tmp/rc /tmp/timedout
    {
        # The test runs in its own session (setsid: it is not a group leader here, so
        # busybox execs without forking and $pid is the process group id), so the
        # watchdog and the clean-up below reach every process it started.
        cd /repo && setsid sh "$t/run.sh" < /dev/null &
        pid=$!
        (sleep "$timeout"; echo > /tmp/timedout; kill -KILL -- -$pid) > /dev/null 2>&1 &
        wd=$!
        wait $pid
        echo $? > /tmp/rc
        kill $wd 2>/dev/null
        # Leftover background processes of the test would hold the output pipe open.
        kill -KILL -- -$pid 2>/dev/null
    } 2>&1 | while IFS= read -r line || [ -n "$line" ]; do
        echo "$name| $line"
    done
    rc=$(cat /tmp/rc 2>/dev/null || echo missing)
    secs=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
    if [ -e /tmp/timedout ]; then
        echo "MIGTRACE-VM-RESULT name=$name status=fail rc=$rc secs=$secs reason=timed out after ${timeout}s (killed)"
    elif [ "$rc" = 0 ]; then
        echo "MIGTRACE-VM-RESULT name=$name status=pass rc=0 secs=$secs reason="
    else
        echo "MIGTRACE-VM-RESULT name=$name status=fail rc=$rc secs=$secs reason=exit code $rc"
    fi
done

echo "MIGTRACE-VM-DONE uptime=$(now)"
if grep -qw vmtest.shell=1 /proc/cmdline; then
    # Booted by hand (target/vmtest/run/qemu.sh): a shell instead of powering off.
    echo "vmtest.shell=1: starting a shell; 'poweroff -f' or exit to power off"
    setsid cttyhack sh
fi
sync
echo o > /proc/sysrq-trigger
sleep 5
poweroff -f
