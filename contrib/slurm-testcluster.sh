#!/bin/sh
# SPDX-License-Identifier: MIT
# A real one-node Slurm cluster (munged, slurmctld, slurmd) in a temporary
# directory, for trying merged --backend slurm on one machine and for the
# tests (docs/cluster.md).  Needs root (slurmd starts jobs as their users)
# and Debian's slurmctld slurmd slurm-client munge (contrib/deps.sh --test).
#
#   slurm-testcluster.sh start        starts one; prints its directory
#   slurm-testcluster.sh stop DIR     cancels its jobs, stops it, removes DIR
#   slurm-testcluster.sh run -- CMD   starts one, runs CMD with SLURM_CONF
#                                     (and SLURM_TESTCLUSTER=DIR) set, then
#                                     stops it whatever happens; CMD's exit
#                                     (CMD runs without them when no
#                                     cluster could start)
#
# Everything (config, munge key and socket, state, spool, logs) lives in
# the directory; the daemons listen on private ports on 127.0.0.1 and run
# in the foreground, so their pids are known and stop kills exactly them.
# The settings that matter, and why, are in docs/cluster.md.
set -eu

die() {
	echo "slurm-testcluster: $*" >&2
	exit 1
}

# Two free TCP ports on the loopback address, one per line.
free_ports() {
	python3 - <<'PY'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
PY
}

write_conf() {
	dir=$1
	ctl_port=$2
	d_port=$3
	# The node line slurmd measures, so that slurmctld does not drain it
	# for a mismatch; only the hardware fields.
	node=$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]*//;
	    s/ UpTime=.*//')
	# slurmctld runs only where SlurmctldHost names this host; the
	# addresses spare it and slurmd any name resolution.
	host=$(hostname -s)
	cat > "$dir/slurm.conf" <<EOF
ClusterName=mergedtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctl_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket.2,cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,batch_sched_delay=0,bf_interval=1
DependencyParameters=kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MinJobAge=300
KillWait=5
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
	[ "$(id -u)" -eq 0 ] || die "needs root: slurmd runs jobs as their users"
	for p in munged mungekey slurmctld slurmd sbatch squeue; do
		command -v "$p" >/dev/null 2>&1 ||
		    [ -x "/usr/sbin/$p" ] ||
		    die "$p is missing: run contrib/deps.sh --test"
	done
	PATH=$PATH:/usr/sbin
	dir=$(mktemp -d "${TMPDIR:-/tmp}/slurm-test.XXXXXX")
	# munged wants every directory above its socket searchable.
	chmod 711 "$dir"
	mkdir -p "$dir/munge" "$dir/state" "$dir/spool"
	chmod 711 "$dir/munge"
	mungekey -c -b 1024 -k "$dir/munge/munge.key" >/dev/null 2>&1 ||
	    die "mungekey failed"
	chmod 600 "$dir/munge/munge.key"
	ports=$(free_ports)
	write_conf "$dir" $(echo "$ports" | head -n 1) \
	    $(echo "$ports" | tail -n 1)
	export SLURM_CONF="$dir/slurm.conf"
	munged -F -f --socket="$dir/munge/munge.socket.2" \
	    --key-file="$dir/munge/munge.key" \
	    --pid-file="$dir/munge/munged.pid" \
	    --log-file="$dir/munge/munged.log" \
	    --seed-file="$dir/munge/munged.seed" </dev/null >/dev/null 2>&1 &
	echo $! > "$dir/pids"
	wait_for "munge socket" 10 test -S "$dir/munge/munge.socket.2" ||
	    { stop "$dir"; die "munged did not start ($dir/munge/munged.log)"; }
	slurmctld -D -i </dev/null >"$dir/slurmctld.out" 2>&1 &
	echo $! >> "$dir/pids"
	slurmd -D </dev/null >"$dir/slurmd.out" 2>&1 &
	echo $! >> "$dir/pids"
	if ! wait_for "an idle node" 30 node_idle; then
		tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
		stop "$dir"
		die "the node did not become idle"
	fi
	echo "$dir"
}

no_jobs_running() {
	[ -z "$(squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ]
}

node_idle() {
	sinfo -h -o %T 2>/dev/null | grep -qx idle
}

# wait_for WHAT SECONDS CMD...: polls CMD every 0.1 s.
wait_for() {
	what=$1
	secs=$2
	n=$((secs * 10))
	shift 2
	while [ "$n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.1
		n=$((n - 1))
	done
	echo "slurm-testcluster: no $what after $secs s" >&2
	return 1
}

stop() {
	dir=$1
	[ -f "$dir/slurm.conf" ] && [ -f "$dir/pids" ] ||
	    die "$dir is not a test cluster's directory"
	export SLURM_CONF="$dir/slurm.conf"
	# Cancelled jobs' processes are gone within about half a second;
	# wait until the controller lists none running before stopping it.
	if scancel --quiet 2>/dev/null; then
		wait_for "end of the jobs" 10 no_jobs_running || true
	fi
	# Reverse start order: slurmd, slurmctld, munged; KILL after 5 s.
	pids=$(tac "$dir/pids")
	for pid in $pids; do
		kill -TERM "$pid" 2>/dev/null || true
		n=50
		while kill -0 "$pid" 2>/dev/null && [ "$n" -gt 0 ]; do
			sleep 0.1
			n=$((n - 1))
		done
		kill -KILL "$pid" 2>/dev/null || true
	done
	rm -rf "$dir"
}

case "${1:-}" in
start)
	start
	;;
stop)
	[ $# -eq 2 ] || die "usage: $0 stop DIR"
	stop "$2"
	;;
run)
	shift
	[ "${1:-}" = "--" ] && shift
	[ $# -gt 0 ] || die "usage: $0 run -- CMD [ARG...]"
	# Without a cluster CMD still runs, without SLURM_CONF: a test
	# says what it lacks (and fails under CI=true).
	if ! dir=$(start); then
		echo "slurm-testcluster: running $1 without a cluster" >&2
		exec "$@"
	fi
	trap 'stop "$dir"' EXIT
	# CMD runs in the background so that a signal to this script is
	# handled at once (a foreground child would defer the trap): CMD
	# hears it too, then the cluster goes.
	SLURM_CONF="$dir/slurm.conf" SLURM_TESTCLUSTER="$dir" "$@" &
	child=$!
	trap 'kill -TERM "$child" 2>/dev/null' INT TERM
	rc=0
	wait "$child" || rc=$?
	# wait returns early when a trapped signal comes; CMD's own end.
	while kill -0 "$child" 2>/dev/null; do
		rc=0
		wait "$child" || rc=$?
	done
	exit "$rc"
	;;
*)
	echo "usage: $0 start | stop DIR | run -- CMD [ARG...]" >&2
	exit 2
	;;
esac
