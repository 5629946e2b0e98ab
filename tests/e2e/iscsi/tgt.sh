# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# tgt.sh - an iSCSI target of the test's own, for the iSCSI tests and the
# benchmark: tgtd (Debian's `tgt`) on 127.0.0.1 with a portal port and a
# control socket (/run/tgtd/socket.N) that no other tgtd on the machine
# uses, LUNs backed by sparse files.  Sourced after lib.sh (or by
# bench.sh); never touches a tgtd it did not start.
#
# TGT_DIR must name a directory of the caller's own (made if missing);
# tgt_start picks TGT_PORT, tgt_stop ends the daemon.  The configuration
# (targets, LUNs, accounts) lives in the daemon's memory only, so
# tgt_restart replays the calls made through tgt_target/tgt_lun/tgt_chap.

TGT_PORT='' TGT_PID='' TGT_IQN_BASE=iqn.2026-01.org.vdpool.test
mkdir -p "${TGT_DIR:?TGT_DIR must name a directory}"
: >"$TGT_DIR/replay"

# tgt_free_port: a TCP port nobody listens on whose control socket is
# unused too (tgtd's -C names /run/tgtd/socket.N after it).
tgt_free_port() {
	local p _
	for _ in $(seq 200); do
		p=$((3300 + RANDOM % 2000))
		ss -Hltn "sport = :$p" | grep -q . && continue
		[ -e "/run/tgtd/socket.$p" ] && continue
		[ -e "/var/run/tgtd/socket.$p" ] && continue
		echo "$p"
		return 0
	done
	return 1
}

# tgtadm_ ARGS...: tgtadm on our daemon's control socket.
tgtadm_() { tgtadm -C "$TGT_PORT" --lld iscsi "$@"; }

# tgt_launch: start tgtd on TGT_PORT and wait until it answers.
tgt_launch() {
	local _
	tgtd -f -C "$TGT_PORT" --iscsi "portal=127.0.0.1:$TGT_PORT" \
		>>"$TGT_DIR/tgtd.log" 2>&1 </dev/null &
	TGT_PID=$!
	disown "$TGT_PID" # no "Killed" job report when tgt_kill ends it
	echo "$TGT_PID" >"$TGT_DIR/tgtd.pid"
	for _ in $(seq 100); do
		if tgtadm_ --mode target --op show >/dev/null 2>&1 &&
			ss -Hltn "sport = :$TGT_PORT" | grep -q .; then
			return 0
		fi
		kill -0 "$TGT_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "tgtd did not start: $(tail -n3 "$TGT_DIR/tgtd.log")" >&2
	return 1
}

# tgt_start: a fresh tgtd with no targets.
tgt_start() {
	command -v tgtd >/dev/null || {
		echo "tgtd not found: run scripts/install-deps.sh" >&2
		return 1
	}
	mkdir -p /run/tgtd
	local _
	# A port another test took between the check and tgtd's bind: the
	# next one.
	for _ in 1 2 3 4 5; do
		TGT_PORT=$(tgt_free_port) || return 1
		tgt_launch 2>/dev/null && return 0
		tgt_kill
	done
	tgt_launch
}

# tgt_test_start: in an e2e test (after lib.sh), tgt_start with the
# daemon stopped by the test's cleanup, and target 1 named "store".
tgt_test_start() {
	VDP_CLEANUP_HOOKS+=(tgt_stop)
	tgt_start || die "cannot start tgtd"
	log "tgtd $TGT_PID on 127.0.0.1:$TGT_PORT"
	tgt_target 1 store || die "tgtadm: target"
}

# tgt_do ARGS...: a configuration call, remembered for tgt_restart.
tgt_do() {
	tgtadm_ "$@" >/dev/null || return 1
	printf '%q ' "$@" >>"$TGT_DIR/replay"
	echo >>"$TGT_DIR/replay"
}

# tgt_target TID NAME: a target iqn.2026-01.org.vdpool.test:NAME open to
# any initiator.
tgt_target() {
	tgt_do --mode target --op new --tid "$1" \
		--targetname "$TGT_IQN_BASE:$2" &&
		tgt_do --mode target --op bind --tid "$1" --initiator-address ALL
}

# tgt_lun TID LUN FILE SIZE [BLOCKSIZE] [thin]: LUN of target TID on a
# sparse FILE of SIZE (created if missing); "thin" turns on logical block
# provisioning (UNMAP, WRITE SAME with UNMAP).
tgt_lun() {
	[ -e "$3" ] || truncate -s "$4" "$3"
	local -a extra=()
	[ -n "${5:-}" ] && extra+=(--blocksize "$5")
	tgt_do --mode logicalunit --op new --tid "$1" --lun "$2" \
		--backing-store "$3" "${extra[@]}" || return 1
	if [ "${6:-}" = thin ]; then
		tgt_do --mode logicalunit --op update --tid "$1" --lun "$2" \
			--params thin_provisioning=1
	fi
}

# tgt_chap TID USER PASSWORD [outgoing]: CHAP on target TID (outgoing:
# the target's own credentials, for mutual CHAP).
tgt_chap() {
	tgt_do --mode account --op new --user "$2" --password "$3" &&
		tgt_do --mode account --op bind --tid "$1" --user "$2" \
			${4:+--outgoing}
}

# tgt_url TID-NAME LUN: the member URL of a LUN.
tgt_url() { echo "iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN_BASE:$1/$2"; }

# tgt_kill: end tgtd with KILL (it ignores TERM; a crash, as far as the
# initiator can tell) and wait for it.
tgt_kill() {
	local _
	[ -n "$TGT_PID" ] || return 0
	kill -KILL "$TGT_PID" 2>/dev/null
	for _ in $(seq 100); do
		kill -0 "$TGT_PID" 2>/dev/null || break
		sleep 0.1
	done
	TGT_PID=''
	rm -f "/run/tgtd/socket.$TGT_PORT" "/run/tgtd/socket.$TGT_PORT.lock"
}

# tgt_restart: tgtd again on the same port with the same configuration.
# The initiators are let in (bind) last, once every LUN is back, as a
# target that restarts from its saved configuration does.
tgt_restart() {
	local line
	tgt_launch || return 1
	while IFS= read -r line; do
		case $line in *" bind "*) continue ;; esac
		eval "tgtadm_ $line" >/dev/null || return 1
	done <"$TGT_DIR/replay"
	while IFS= read -r line; do
		case $line in *" bind "*) ;; *) continue ;; esac
		eval "tgtadm_ $line" >/dev/null || return 1
	done <"$TGT_DIR/replay"
}

# tgt_stop: the daemon ends; safe to call twice.
tgt_stop() { tgt_kill; }
