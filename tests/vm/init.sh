#!/bin/busybox sh
# PID 1 of the cgroup v2 test VM (tests/cgroup_v2_vm.rs): sets up a machine with a pure
# cgroup v2 hierarchy, starts `orch agent --dev`, runs /vm/scenario.sh and powers off.
# Result lines go to /dev/ttyS1 (fd 3, the host's results file); the rest to the console.

/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
# Nothing but cgroup2 at /sys/fs/cgroup: what a systemd host with the unified hierarchy has.
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
hostname orch-v2-vm
ip link set lo up
# The results port stays open for the whole run: a tty closed after every line can drop
# the end of what was written to it.
stty -F /dev/ttyS1 raw -echo
exec 3>/dev/ttyS1

. /vm/scenario.sh

echo "orch-v2-vm: powering off"
sync
poweroff -f
