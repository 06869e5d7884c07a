# The checks of the cgroup v2 test VM (tests/cgroup_v2_vm.rs), sourced by /init once the
# machine is up: runs the dev agent and the jobs of /vm/jobs, and reports what the kernel
# and the agent show as `ORCH-V2 KEY=VALUE` lines on /dev/ttyS1. The host judges them;
# this script only waits (with deadlines) for the states it needs to go on.

# A result line for the host (VALUE on one line), echoed shortened on the console.
report() {
    echo "ORCH-V2 $1=$2" >&3
    echo "ORCH-V2 $1=$2" | cut -c 1-160
}

# Ends the scenario: the host names the step from the `failed` line and prints the console.
fail() {
    report failed "$1"
    echo "---- agent log (last 80 lines)"
    tail -n 80 /tmp/agent.log
    poweroff -f
}

# wait_for SECONDS WHAT COMMAND...: polls COMMAND until it succeeds, or fails WHAT.
wait_for() {
    limit=$1
    what=$2
    shift 2
    start=$(date +%s)
    until "$@" >/dev/null; do
        if [ $(($(date +%s) - start)) -ge "$limit" ]; then
            fail "timed out after ${limit}s waiting for $what"
        fi
        sleep 0.2
    done
}

# The CLI with a deadline, so a hung agent fails the step instead of the whole VM.
o() { timeout 60 orch "$@"; }

# Seconds since boot, with hundredths.
now() { cut -d ' ' -f 1 /proc/uptime; }

# task_cgroup TASK: the cgroup directory of the running task named TASK.
task_cgroup() {
    for d in /sys/fs/cgroup/orch.slice/*-"$1"; do
        if [ -d "$d" ] && [ -n "$(cat "$d/cgroup.procs" 2>/dev/null)" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

# alloc_of DIR TASK: the allocation id in a task cgroup's name (`<alloc>-<task>`).
alloc_of() {
    name=$(basename "$1")
    echo "${name%-"$2"}"
}

# alloc_is ALLOC STATUS: true when the allocation's client status is STATUS.
alloc_is() { o alloc status --json "$1" 2>/dev/null | grep -q "\"client_status\": \"$2\""; }

# The allocation as one line of JSON.
alloc_json() { o alloc status --json "$1" | tr -d '\n'; }

# Every cpu allowed to the processes of a cgroup, e.g. "0" or "0-1" (one per distinct value).
cpus_allowed() {
    for p in $(cat "$1/cgroup.procs"); do
        sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "/proc/$p/status" 2>/dev/null
    done | sort -u | tr '\n' ' '
}

# The task cgroups left under orch.slice.
leftovers() {
    for d in /sys/fs/cgroup/orch.slice/*; do
        [ -d "$d" ] && basename "$d"
    done | tr '\n' ' '
}
no_leftovers() { [ -z "$(leftovers)" ]; }

report kernel "$(uname -r)"
report boot_seconds "$(now)"
report cgroup_mounts "$(grep cgroup /proc/mounts | tr '\n' ';')"
report root_controllers "$(cat /sys/fs/cgroup/cgroup.controllers)"

# ---- the agent -------------------------------------------------------------------------
# In a cgroup of its own below the root, as systemd runs it (system.slice/orch.service).
mkdir /sys/fs/cgroup/orch-agent.service
sh -c 'echo $$ >/sys/fs/cgroup/orch-agent.service/cgroup.procs &&
    exec orch agent --dev --data-dir /tmp/orch' >/tmp/agent.log 2>&1 &
agent_pid=$!
node_ready() { o node status --json 2>/dev/null | grep -q '"status": "ready"'; }
wait_for 180 "the dev agent's node to be ready" node_ready
report agent_ready_seconds "$(now)"
report agent_cgroup "$(cat "/proc/$agent_pid/cgroup")"
node=$(o node status --json | sed -n 's/^ *"id": "\([^"]*\)".*/\1/p' | head -n 1)
report node "$(o node status --json "$node" | tr -d '\n')"
report root_subtree_control_before "$(cat /sys/fs/cgroup/cgroup.subtree_control)"

# ---- 1. memory: memory.max, and an OOM kill reported as one -----------------------------
o job run --detach /vm/jobs/oom.toml >/dev/null || fail "orch job run oom.toml"
wait_for 120 "the cgroup of task eat (oom.toml)" task_cgroup eat
eat=$(task_cgroup eat)
report root_subtree_control "$(cat /sys/fs/cgroup/cgroup.subtree_control)"
report slice_subtree_control "$(cat /sys/fs/cgroup/orch.slice/cgroup.subtree_control)"
report oom_memory_max "$(cat "$eat/memory.max")"
report oom_memory_swap_max "$(cat "$eat/memory.swap.max")"
report oom_pids_max "$(cat "$eat/pids.max")"
oom_alloc=$(alloc_of "$eat" eat)
touch /tmp/go-oom
wait_for 120 "the OOM-killed allocation of oom.toml to fail" alloc_is "$oom_alloc" failed
report oom_alloc "$(alloc_json "$oom_alloc")"

# ---- 2. cpu weight, cpu.max, cores, usage ----------------------------------------------
o job run --detach /vm/jobs/busy.toml >/dev/null || fail "orch job run busy.toml"
wait_for 120 "the cgroup of task spin (busy.toml)" task_cgroup spin
spin=$(task_cgroup spin)
busy_alloc=$(alloc_of "$spin" spin)
report busy_cpu_weight "$(cat "$spin/cpu.weight")"
report busy_cpu_max "$(cat "$spin/cpu.max")"
report busy_memory_max "$(cat "$spin/memory.max")"
report busy_memory_low "$(cat "$spin/memory.low")"
report busy_cpuset_alone "$(cat "$spin/cpuset.cpus")"

o job run --detach /vm/jobs/pinned.toml >/dev/null || fail "orch job run pinned.toml"
wait_for 120 "the cgroup of task pin (pinned.toml)" task_cgroup pin
pin=$(task_cgroup pin)
report pinned_cpuset "$(cat "$pin/cpuset.cpus")"
report pinned_cpuset_effective "$(cat "$pin/cpuset.cpus.effective")"
report pinned_cpus_allowed "$(cpus_allowed "$pin")"
report busy_cpuset_beside_pinned "$(cat "$spin/cpuset.cpus")"
report busy_cpus_allowed_beside_pinned "$(cpus_allowed "$spin")"

# Let the spinner run into its quota for a while, then read its usage through the agent
# between two reads of the kernel's own counter.
sleep 3
report busy_cpu_stat_before "$(tr '\n' ' ' <"$spin/cpu.stat")"
report busy_alloc "$(alloc_json "$busy_alloc")"
report busy_cpu_stat_after "$(tr '\n' ' ' <"$spin/cpu.stat")"

o job stop --purge pinned >/dev/null || fail "orch job stop --purge pinned"
report busy_cpuset_after_pinned "$(cat "$spin/cpuset.cpus")"
report busy_cpus_allowed_after_pinned "$(cpus_allowed "$spin")"
o job stop --purge busy >/dev/null || fail "orch job stop --purge busy"

# ---- 3. pids: a fork bomb stops at pids.max, the agent answers, the task stops ---------
o job run --detach /vm/jobs/bomb.toml >/dev/null || fail "orch job run bomb.toml"
wait_for 120 "the cgroup of task bomb (bomb.toml)" task_cgroup bomb
bomb=$(task_cgroup bomb)
report bomb_pids_max "$(cat "$bomb/pids.max")"
forks_refused() { [ "$(sed -n 's/^max //p' "$bomb/pids.events")" -gt 0 ]; }
wait_for 120 "the fork bomb to reach pids.max" forks_refused
sleep 2
report bomb_pids_current "$(cat "$bomb/pids.current")"
report bomb_pids_events "$(tr '\n' ' ' <"$bomb/pids.events")"
t0=$(now)
o node status >/dev/null
report bomb_cli "rc=$? seconds_from=$t0 seconds_to=$(now)"
t0=$(now)
timeout 120 orch job stop --purge bomb >/dev/null
report bomb_stop "rc=$? seconds_from=$t0 seconds_to=$(now)"

# ---- 4. cleanup: no task cgroup left once every job is stopped and purged --------------
o job stop --purge oom >/dev/null || fail "orch job stop --purge oom"
start=$(date +%s)
until no_leftovers || [ $(($(date +%s) - start)) -ge 30 ]; do sleep 0.2; done
report leftover_cgroups "$(leftovers)"
report agent_alive "$(kill -0 "$agent_pid" 2>/dev/null && echo yes || echo no)"
report done "$(now)"
