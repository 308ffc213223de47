#!/bin/sh
# limapy guest boot script: run from the cidata seed on every boot.
#
# Started by cloud-init's bootcmd hook (see lima/drivers/cloudconfig.py) on cloud-init
# guests, or by the image's own init on guests without cloud-init. POSIX sh only: it
# runs under dash, bash and busybox ash.
#
# Contract with the host ($RUN = LIMA_BOOT_RUN_DIR, /run; markers hold this boot's IID):
#   $RUN/lima-ssh-ready    "IID\n", written once /etc/environment is in place,
#                          before any boot or provision script runs.
#   $RUN/lima-boot-done    "IID\n", written at the end when every script succeeded.
#   $RUN/lima-boot-failed  "IID\n" then one line per failure, written at the end instead
#                          of lima-boot-done: "<label>: exit N; last output: a | b
#                          (full output: $RUN/lima-provision/<step>.log)", the label
#                          being the step as lima.yaml has it (provision.labels).
#   $RUN/lima-provision/   each step's output, kept for this boot.
#   $RUN/lima-shares-done  "IID\n", written by `boot.sh --mounts` when it has put the
#                          9p/virtiofs shares in fstab and mounted them (or failed to):
#                          for boot.sh itself, not the host.
# Stale markers of an earlier boot are removed at start. Order (Lima's): boot/* (ours,
# then `mode: boot` steps), the wait for the 9p/virtiofs mounts, provision.dependency/*,
# provision.data/*.sh, provision.yq/* (util/lima-yq, needs python3), provision.system/*
# as root, then provision.user/* as
# the guest user (after waiting, bounded, for the user to exist). A guest without
# cloud-init reports caCerts and upgradePackages as not done.
# Output goes to $LIMA_BOOT_LOG and the console.
#
# Overrides (for tests and unusual guests):
#   LIMA_CIDATA_MNT (/mnt/lima-cidata)   LIMA_BOOT_RUN_DIR (/run)
#   LIMA_BOOT_LOG (/var/log/lima-init.log)  LIMA_BOOT_CONSOLE (/dev/console)
#   LIMA_BOOT_ETC_ENVIRONMENT (/etc/environment)
#   LIMA_BOOT_USER_TIMEOUT (300 s)
#   LIMA_BOOT_MOUNTS_FILE (/proc/mounts)  LIMA_BOOT_MOUNT_TIMEOUT (120 s)
#   LIMA_BOOT_FSTAB (/etc/fstab)  LIMA_BOOT_MOUNT (mount: the command, given a mount point)
#   LIMA_BOOT_SYSTEMD_USER_TIMEOUT (30 s; 0 = do not start the user's systemd instance)
#   LIMA_BOOT_RUN_AS: command prefix that runs "$prefix USER /bin/sh WRAPPER" instead
#                     of runuser/su/sudo.
#   LIMA_BOOT_SHARES_UNIT: set (by cloud-init's bootcmd) when `boot.sh --mounts` runs as
#                     a unit of its own: the shares are left to it, and waited for.
#   LIMA_BOOT_CLOUD_INIT_RUN (/run/cloud-init)  LIMA_BOOT_CLOUD_INIT_TIMEOUT (600 s)
#   LIMA_BOOT_SYSTEMD_DIR (/run/systemd/system: there when systemd is PID 1)
#   LIMA_BOOT_SYSTEMD_RUN (systemd-run: the command)  LIMA_BOOT_UPTIME (/proc/uptime)
set -u

: "${LIMA_CIDATA_MNT:=/mnt/lima-cidata}"
MNT="$LIMA_CIDATA_MNT"
RUN_DIR="${LIMA_BOOT_RUN_DIR:-/run}"
LOG="${LIMA_BOOT_LOG:-/var/log/lima-init.log}"
CONSOLE="${LIMA_BOOT_CONSOLE:-/dev/console}"
ETC_ENVIRONMENT="${LIMA_BOOT_ETC_ENVIRONMENT:-/etc/environment}"
USER_TIMEOUT="${LIMA_BOOT_USER_TIMEOUT:-300}"
SYSTEMD_USER_TIMEOUT="${LIMA_BOOT_SYSTEMD_USER_TIMEOUT:-30}"
# cloud-init's per-boot run directory; its result.json appears when the final stage ends.
CLOUD_INIT_RUN="${LIMA_BOOT_CLOUD_INIT_RUN:-/run/cloud-init}"
CLOUD_INIT_TIMEOUT="${LIMA_BOOT_CLOUD_INIT_TIMEOUT:-600}"
RUN_AS="${LIMA_BOOT_RUN_AS:-}"
MOUNTS_FILE="${LIMA_BOOT_MOUNTS_FILE:-/proc/mounts}"
MOUNT_TIMEOUT="${LIMA_BOOT_MOUNT_TIMEOUT:-120}"
FSTAB="${LIMA_BOOT_FSTAB:-/etc/fstab}"
MOUNT="${LIMA_BOOT_MOUNT:-mount}"
# How many lines of a failing step's output its failure record quotes.
TAIL_LINES="${LIMA_BOOT_TAIL_LINES:-5}"
SYSTEMD_DIR="${LIMA_BOOT_SYSTEMD_DIR:-/run/systemd/system}"
SYSTEMD_RUN="${LIMA_BOOT_SYSTEMD_RUN:-systemd-run}"
UPTIME="${LIMA_BOOT_UPTIME:-/proc/uptime}"
export LIMA_CIDATA_MNT

# Each line logged has the local time as `date '+%Y-%m-%dT%H:%M:%S'` gives it, from one
# `date` call and /proc/uptime since, with shell arithmetic: under TCG each `date` costs
# the guest ~70 ms of CPU. CLOCK_S="" has the next line ask `date` again (the time zone
# or the clock may have changed); "-": `date` for each line, as without /proc/uptime or
# a `date` with no %N (busybox's: a whole second is too coarse to count from).
CLOCK_S=""
INFO() {
	stamp
	echo "LIMA $STAMP| $*"
}
WARNING() {
	stamp
	echo "LIMA $STAMP| WARNING: $*"
}

# The time since boot in centiseconds, in c_cs: read from /proc/uptime, no program.
uptime_cs() {
	c_up=""
	read -r c_up _c_idle <"$UPTIME" || return 1
	case "$c_up" in [0-9]*.[0-9][0-9]) ;; *) return 1 ;; esac
	case "$c_up" in *[!0-9.]*) return 1 ;; esac
	c_frac="${c_up#*.}"
	c_cs=$((${c_up%.*} * 100 + ${c_frac#0}))
} 2>/dev/null

# STAMP from `date`, and CLOCK_S: the epoch second it gave, begun at uptime CLOCK_UP (in
# centiseconds: the midpoint of two reads around the call, less the fraction of the
# second); CLOCK_OFF: the UTC offset, in seconds.
clock_sync() {
	CLOCK_S=- c_before=""
	uptime_cs && c_before="$c_cs"
	c_now=$(date '+%Y-%m-%dT%H:%M:%S %s %N %z')
	STAMP="${c_now%% *}"
	[ -n "$c_before" ] && uptime_cs || return 0
	c_s="${c_now#* }"
	c_n="${c_s#* }"
	c_s="${c_s%% *}"
	c_zone="${c_n#* }"
	c_n="${c_n%% *}"
	case "$c_s" in '' | *[!0-9]*) return 0 ;; esac
	case "$c_n" in [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]) ;; *) return 0 ;; esac
	case "$c_zone" in [+-][0-9][0-9][0-9][0-9]) ;; *) return 0 ;; esac
	# Milliseconds (three digits, 1 put before them: a leading zero would make an octal
	# number, and 08 or 09 an arithmetic error that ends the shell), then centiseconds.
	c_n="${c_n%??????}"
	c_n=$((1$c_n - 1000))
	c_h="${c_zone#?}"
	c_m="${c_h#??}"
	c_h="${c_h%??}"
	CLOCK_OFF=$(((${c_h#0} * 60 + ${c_m#0}) * 60))
	case "$c_zone" in -*) CLOCK_OFF=$((-CLOCK_OFF)) ;; esac
	CLOCK_UP=$(((c_before + c_cs) / 2 - (c_n + 5) / 10))
	CLOCK_S="$c_s"
}

# STAMP: the local time now.
stamp() {
	if [ -z "$CLOCK_S" ]; then
		clock_sync
		return
	fi
	if [ "$CLOCK_S" != - ] && uptime_cs; then
		c_local=$((CLOCK_S + (c_cs - CLOCK_UP) / 100 + CLOCK_OFF))
		if [ "$c_local" -ge 0 ]; then
			civil "$c_local"
			return
		fi
	fi
	STAMP=$(date '+%Y-%m-%dT%H:%M:%S')
}

# STAMP from $1, local seconds since 1970-01-01T00:00:00: days to a civil date (proleptic
# Gregorian) by 400-year eras of 146097 days counted from 0000-03-01, so that a leap day
# ends its year.
civil() {
	c_days=$(($1 / 86400 + 719468))
	c_t=$(($1 % 86400))
	c_era=$((c_days / 146097))
	c_doe=$((c_days - c_era * 146097))
	c_yoe=$(((c_doe - c_doe / 1460 + c_doe / 36524 - c_doe / 146096) / 365))
	c_doy=$((c_doe - 365 * c_yoe - c_yoe / 4 + c_yoe / 100))
	c_mp=$(((5 * c_doy + 2) / 153))
	c_d=$((c_doy - (153 * c_mp + 2) / 5 + 1))
	c_m=$((c_mp < 10 ? c_mp + 3 : c_mp - 9))
	c_y=$((c_era * 400 + c_yoe + (c_m <= 2)))
	c_H=$((c_t / 3600))
	c_M=$((c_t / 60 % 60))
	c_S=$((c_t % 60))
	[ "$c_m" -gt 9 ] || c_m="0$c_m"
	[ "$c_d" -gt 9 ] || c_d="0$c_d"
	[ "$c_H" -gt 9 ] || c_H="0$c_H"
	[ "$c_M" -gt 9 ] || c_M="0$c_M"
	[ "$c_S" -gt 9 ] || c_S="0$c_S"
	STAMP="$c_y-$c_m-${c_d}T$c_H:$c_M:$c_S"
}

valid_key() {
	case "$1" in '' | [0-9]* | *[!A-Za-z0-9_]*) return 1 ;; esac
	return 0
}

# Export the variables of lima.env / param.env: shell assignments, values quoted where
# needed, so they can be sourced (the tiny guest's init sources lima.env too). A file
# that does not parse would abort the whole script (`.` is a special built-in), so it
# is tried in a subshell first.
load_env_file() {
	[ -f "$1" ] || return 0
	if ! (. "$1") >/dev/null 2>&1; then
		record_failure "$1 does not parse; not loaded"
		return 0
	fi
	set -a
	. "$1"
	set +a
}

# Export an /etc/environment style file the way pam_env reads it: optional
# "export " prefix, one pair of surrounding quotes stripped, comments skipped.
load_pam_env_file() {
	[ -f "$1" ] || return 0
	while IFS= read -r line || [ -n "$line" ]; do
		line="${line#export }"
		case "$line" in '' | '#'*) continue ;; *=*) ;; *) continue ;; esac
		key="${line%%=*}"
		value="${line#*=}"
		case "$value" in
		\"*\") value="${value#\"}" value="${value%\"}" ;;
		\'*\') value="${value#\'}" value="${value%\'}" ;;
		esac
		valid_key "$key" && export "$key=$value"
	done <"$1"
}

# Markers are read over ssh by the guest user: world-readable (made so by the umask, in a
# subshell, rather than by chmod), replaced atomically.
write_marker() {
	tmp="$RUN_DIR/.$1.$$"
	(umask 022 && printf '%s\n' "$2" >"$tmp") && mv -f "$tmp" "$RUN_DIR/$1"
}

FAILURES=""
record_failure() {
	WARNING "$1"
	FAILURES="${FAILURES}${1}
"
}

# Run one file: by its #! line when it has one, else with /bin/sh.
# Shell built-ins where a step is started or logged: under TCG each program started costs
# the guest tens of milliseconds of CPU while cloud-init's last stages run.
run_file() {
	first=""
	IFS= read -r first <"$1" 2>/dev/null
	case "$first" in
	'#!'*) "$@" ;;
	*) /bin/sh "$@" ;;
	esac
}

# $1 with every / turned into _, in flat_name (no $(...): a fork a step).
slashes_to_underscores() {
	rest="$1" flat_name=""
	while :; do
		case "$rest" in
		*/*) flat_name="$flat_name${rest%%/*}_" rest="${rest#*/}" ;;
		*) flat_name="$flat_name$rest" && return ;;
		esac
	done
}

# The name lima.yaml gives a seed file ("provision[2] (mode: system) ..."), from
# provision.labels; our own boot scripts keep their path.
label_of() {
	label=""
	[ -f "$MNT/provision.labels" ] &&
		label=$(awk -F '\t' -v k="$1" '$1 == k { print $2; exit }' "$MNT/provision.labels")
	printf '%s' "${label:-$1}"
}

# "; last output: a | b | c": the last non-empty lines of a step's output, on one line.
output_tail() {
	[ -s "$1" ] || return 0
	t=$(tr -d '\r' <"$1" | grep -v '^[[:space:]]*$' | tail -n "$TAIL_LINES" | cut -c1-160 |
		sed 's/$/ |/' | tr '\n' ' ')
	[ -n "$t" ] && printf '; last output: %s' "${t% | }"
}

# Run one step ("$@") with its output in $STEP_LOGS/<name>.log (kept for this boot), then
# copied to ours. A file, not a pipe: a daemon a script leaves running may hold its
# output open forever. A failure is recorded with the step's label, exit status and the
# last lines of its output.
run_step() {
	key="$1"
	shift
	slashes_to_underscores "$key"
	out="$STEP_LOGS/$flat_name.log"
	"$@" >"$out" 2>&1 </dev/null
	rc=$?
	[ -s "$out" ] && cat "$out"
	if [ "$rc" -ne 0 ]; then
		record_failure "$(label_of "$key"): exit $rc$(output_tail "$out") (full output: $out)"
	fi
	return "$rc"
}

run_root_dir() {
	[ -d "$1" ] || return 0
	for f in "$1"/$2; do
		[ -f "$f" ] || continue
		INFO "Executing $f"
		run_step "${f#"$MNT"/}" run_file "$f"
	done
}

# mode: yq, with util/lima-yq (python3); the step's metadata comes from lima.env.
run_yq_dir() {
	[ -d "$MNT/provision.yq" ] || return 0
	for prog in "$MNT"/provision.yq/*.json; do
		[ -f "$prog" ] || continue
		num=$(basename "$prog" .json)
		case "$num" in '' | *[!0-9]*) continue ;; esac
		key="provision.yq/$num"
		if ! command -v python3 >/dev/null 2>&1; then
			record_failure "$(label_of "$key"): not run: mode yq needs python3 in the guest, which has none"
			continue
		fi
		eval "path=\${LIMA_CIDATA_YQ_PROVISION_${num}_PATH:-}"
		eval "format=\${LIMA_CIDATA_YQ_PROVISION_${num}_FORMAT:-yaml}"
		eval "owner=\${LIMA_CIDATA_YQ_PROVISION_${num}_OWNER:-root:root}"
		eval "perms=\${LIMA_CIDATA_YQ_PROVISION_${num}_PERMISSIONS:-644}"
		INFO "Updating $path ($key)"
		# shellcheck disable=SC2154 # set by the evals above
		run_step "$key" python3 "$MNT/util/lima-yq" "$prog" "$path" "$format" "$owner" "$perms"
	done
}

# timezone without cloud-init: the zoneinfo file when the guest has it. The builtin is the
# host's zone, so a guest without zoneinfo (build:tiny) only gets a warning, not a failure.
set_timezone() {
	tz="${LIMA_CIDATA_TIMEZONE:-}"
	[ -n "$tz" ] || return 0
	zone="${LIMA_BOOT_ZONEINFO:-/usr/share/zoneinfo}/$tz"
	if [ -f "$zone" ]; then
		# The next line's time is in the new zone: ask `date`.
		CLOCK_S=""
		ln -sf "$zone" "${LIMA_BOOT_LOCALTIME:-/etc/localtime}" &&
			echo "$tz" >"${LIMA_BOOT_TIMEZONE_FILE:-/etc/timezone}" && INFO "timezone: $tz"
	else
		WARNING "timezone $tz not set: this guest has no $zone"
	fi
}

# What only cloud-init does (packages, CA certificates) cannot happen on a guest without
# it: say so rather than skip it quietly.
check_cloud_init_features() {
	[ -d "$CLOUD_INIT_RUN" ] && return 0
	set_timezone
	if [ "${LIMA_CIDATA_UPGRADE_PACKAGES:-}" = 1 ]; then
		record_failure "upgradePackages: not done: this guest has no cloud-init to upgrade its packages"
	fi
	if [ "${LIMA_CIDATA_CA_CERTS:-0}" -gt 0 ] 2>/dev/null; then
		record_failure "caCerts: not installed: this guest has no cloud-init to install them"
	fi
}

has_files() {
	[ -d "$1" ] || return 1
	for f in "$1"/*; do
		[ -f "$f" ] && return 0
	done
	return 1
}

wait_for_user() {
	waited=0
	until id -u "$1" >/dev/null 2>&1; do
		[ "$waited" -ge "$USER_TIMEOUT" ] && return 1
		[ "$waited" -eq 0 ] && INFO "Waiting for user $1 to exist"
		sleep 1
		waited=$((waited + 1))
	done
	return 0
}

# Until $1 exists or CLOUD_INIT_TIMEOUT has passed. Under systemd, one systemd-run that
# blocks until cloud-init's final stage is over: its unit is ordered after
# cloud-final.service, whose start job is queued from boot on, and a start job waits for
# those of the units it is ordered after (systemd.unit(5), After=). `timeout` ends it at
# the timeout (systemd 252 refuses JobTimeoutSec on a transient unit; the job left queued
# only runs /bin/true later); DefaultDependencies=no keeps it off basic.target and
# shutdown.target.
# Whatever it returns, the file decides. Otherwise, or then, five looks a second for what
# is left of the timeout (busybox and coreutils sleep take fractions): Running follows the
# end of the final stage by 0.1 s on average, not 0.5 s. Under TCG each `sleep` costs the
# guest ~60 ms of CPU, taken from cloud-init's last stages.
wait_for_file() {
	left=$((CLOUD_INIT_TIMEOUT * 100))
	if [ "$left" -gt 0 ] && [ -d "$SYSTEMD_DIR" ] &&
		command -v "$SYSTEMD_RUN" >/dev/null 2>&1; then
		since=""
		uptime_cs && since="$c_cs"
		limit=""
		command -v timeout >/dev/null 2>&1 && limit="timeout $CLOUD_INIT_TIMEOUT"
		# shellcheck disable=SC2086 # $limit: a command prefix or nothing
		$limit "$SYSTEMD_RUN" --wait --quiet --collect -p After=cloud-final.service \
			-p DefaultDependencies=no --unit="lima-cloud-init-wait-$IID" /bin/true \
			</dev/null >/dev/null
		[ -f "$1" ] && return 0
		[ -n "$since" ] && uptime_cs && left=$((left - (c_cs - since)))
	fi
	ticks=0
	until [ -f "$1" ]; do
		[ $((ticks * 20)) -lt "$left" ] || return 1
		sleep 0.2 2>/dev/null || sleep 1
		ticks=$((ticks + 1))
	done
	return 0
}

# Whether cloud-init's result.json ($1) reports errors, with their text (what
# `"errors": [...]` holds, cut to 400 bytes) in errs. Shell builtins, no tr, grep, sed,
# cut (each costs the guest tens of ms of CPU under TCG), giving what they gave: the file
# on one line, runs of spaces squeezed (`tr -d '\n' | tr -s ' '`), then "no errors" when
# it has `"errors":[]` with spaces anywhere between (squeezed, at most one), else the
# last `"errors": [` that has a `]` after it, up to that `]`.
result_errors() {
	flat="" jsp=""
	while IFS= read -r jline || [ -n "$jline" ]; do
		while :; do
			case "$jline" in
			*"  "*) jline="${jline%%"  "*} ${jline#*"  "}" ;;
			*) break ;;
			esac
		done
		# The run may span the line break.
		[ -z "$jsp" ] || jline="${jline# }"
		[ -n "$jline" ] || continue
		flat="$flat$jline"
		case "$jline" in *" ") jsp=1 ;; *) jsp="" ;; esac
	done <"$1"
	case "$flat" in
	*'"errors":[]'* | *'"errors":[ ]'* | *'"errors": []'* | *'"errors": [ ]'* | \
		*'"errors" :[]'* | *'"errors" :[ ]'* | *'"errors" : []'* | *'"errors" : [ ]'*)
		return 1
		;;
	esac
	errs="" rest="$flat"
	while :; do
		case "$rest" in *'"errors":'*) ;; *) break ;; esac
		rest=${rest#*\"errors\":}
		list=${rest# }
		case "$list" in "["*"]"*) list=${list#"["} && errs=${list%%"]"*} ;; esac
	done
	if [ "${#errs}" -gt 400 ]; then
		q="??????????"
		q="$q$q$q$q$q$q$q$q$q$q"
		q="$q$q$q$q"
		# shellcheck disable=SC2295 # $q is a pattern: 400 characters, any
		rest=${errs#$q}
		errs=${errs%"$rest"}
	fi
	return 0
} 2>/dev/null

# "Provisioned" includes cloud-init's own work (users, keys, growpart, packages): on a
# guest that runs cloud-init, wait (bounded) for its final stage of this boot to report.
wait_for_cloud_init() {
	[ -d "$CLOUD_INIT_RUN" ] || return 0
	result="$CLOUD_INIT_RUN/result.json"
	if [ ! -f "$result" ]; then
		INFO "Waiting for cloud-init to finish"
		wait_for_file "$result"
	fi
	# cloud-init's config stage may have set the time zone meanwhile: ask `date` again.
	CLOCK_S=""
	if [ ! -f "$result" ]; then
		record_failure "cloud-init did not finish within ${CLOUD_INIT_TIMEOUT}s"
	elif result_errors "$result"; then
		record_failure "cloud-init reported errors: ${errs:-see} (cloud-init status --long)"
	fi
}

# Whether $1 is a mount point in the mount table; whether file $1 holds line $2. Shell
# builtins only: under TCG each program started costs the guest 0.05-0.15 s of CPU, and
# the shares' unit is on the way to the provisioning steps (wait_for_mounts).
is_mounted() {
	while read -r _dev _mp _rest; do
		[ "$_mp" = "$1" ] && return 0
	done <"$MOUNTS_FILE"
	return 1
} 2>/dev/null

has_line() {
	while IFS= read -r _line; do
		[ "$_line" = "$2" ] && return 0
	done <"$1"
	return 1
} 2>/dev/null

# IID: this boot's IID, lima.env's LIMA_CIDATA_IID line read with shell builtins
# (`--mounts` does not load lima.env). Not meta-data's instance-id: that one is
# cloud-init's, the same from boot to boot while the spec is.
read_seed_iid() {
	IID=""
	while IFS='=' read -r _key _value; do
		[ "$_key" = LIMA_CIDATA_IID ] && IID="$_value" && return 0
	done <"$MNT/lima.env"
	return 1
} 2>/dev/null

# The end of the shares' part (`boot.sh --mounts`, or main's own mount_shares_early),
# success or not. A single short write by a builtin: the reader sees it whole.
write_shares_done() {
	printf '%s\n' "$1" >"$RUN_DIR/lima-shares-done"
} 2>/dev/null

shares_done() {
	_done=""
	read -r _done <"$RUN_DIR/lima-shares-done" && [ "$_done" = "$IID" ]
} 2>/dev/null

# The 9p and virtiofs shares are boot.sh's own under cloud-init (fstab and mounted, by
# `boot.sh --mounts`, a unit of its own that cloud-init's bootcmd starts beside this
# one, or by mount_shares_early in main). The provisioning steps (not `mode: boot`, which
# come first as on Lima) see them mounted, as they do on Lima, which runs them from
# cloud-init's final stage. The wait ends when every share is mounted, or when the
# shares' part has ended ($RUN/lima-shares-done holds this IID) or the timeout: a share
# that did not mount (nofail) is a warning; the host agent reports it.
wait_for_mounts() {
	[ -d "$CLOUD_INIT_RUN" ] || return 0
	case "${LIMA_CIDATA_MOUNTTYPE:-}" in 9p | virtiofs) ;; *) return 0 ;; esac
	n="${LIMA_CIDATA_MOUNTS:-0}"
	i=0
	ticks=0
	while [ "$i" -lt "$n" ] 2>/dev/null; do
		eval "mp=\${LIMA_CIDATA_MOUNTS_${i}_MOUNTPOINT:-}"
		if [ -z "$mp" ] || is_mounted "$mp"; then
			i=$((i + 1))
			continue
		fi
		if shares_done || [ "$ticks" -ge $((MOUNT_TIMEOUT * 5)) ]; then
			WARNING "$mp is not mounted; provisioning goes on without it"
			i=$((i + 1))
			continue
		fi
		[ "$ticks" -eq 0 ] && INFO "Waiting for the mounts"
		sleep 0.2 2>/dev/null || sleep 1
		ticks=$((ticks + 1))
	done
}

# Whether fstab line $1 is a share's line that the seed no longer has (the share was
# removed from lima.yaml): cloud-init's comment, type 9p or virtiofs, not a seed line.
is_stale_share() {
	_l="$1"
	case "$_l" in *comment=cloudconfig*) ;; *) return 1 ;; esac
	set -f
	# shellcheck disable=SC2086 # fields: device, mount point, type, ...
	set -- $_l
	set +f
	case "${1:-}" in '#'*) return 1 ;; esac
	case "${3:-}" in 9p | virtiofs) ;; *) return 1 ;; esac
	! has_line "$MNT/fstab" "$_l"
}

# Drop the stale shares' lines from fstab: rewritten whole (a copy with its mode and
# owner, then renamed over it) only when there is one, so fstab is never half written.
# Every other line stays as it is. Sets FSTAB_NO_EOL when fstab's last line has no
# newline.
remove_stale_shares() {
	stale="" FSTAB_NO_EOL=""
	[ -f "$FSTAB" ] || return 0
	while IFS= read -r line || { [ -n "$line" ] && FSTAB_NO_EOL=1; }; do
		is_stale_share "$line" && stale=1
	done <"$FSTAB"
	[ -n "$stale" ] || return 0
	tmp="$FSTAB.lima.$$"
	removed=""
	if cp -p "$FSTAB" "$tmp" && while IFS= read -r line || [ -n "$line" ]; do
		if is_stale_share "$line"; then
			removed="$removed $line |"
		else
			printf '%s\n' "$line"
		fi
	done <"$FSTAB" >"$tmp" && mv -f "$tmp" "$FSTAB"; then
		FSTAB_NO_EOL=""
		INFO "removed from $FSTAB the lines of shares no longer in lima.yaml:${removed% |}"
	else
		rm -f "$tmp"
		WARNING "could not remove the lines of old shares from $FSTAB"
	fi
}

# The seed's `fstab` holds the 9p/virtiofs shares' lines as cloud-init's mounts module
# would write them (Lima's user-data `mounts:`; limapy's has none, so cloud-init leaves
# fstab alone and its config stage need not wait for the shares): boot.sh writes them
# itself, and removes those of shares that are gone, as that module would. Lines of
# earlier boots, written by either, are the same. Only under cloud-init: elsewhere the
# host agent mounts the shares.
add_shares_to_fstab() {
	[ -d "$CLOUD_INIT_RUN" ] || return 0
	# Also when lima.yaml has no shares left (the seed then has no fstab).
	remove_stale_shares
	[ -f "$MNT/fstab" ] || return 0
	while IFS= read -r line; do
		[ -n "$line" ] || continue
		# shellcheck disable=SC2086 # fields: tag, mount point, type, options, 0, 0
		set -- $line
		[ $# -eq 6 ] || continue
		has_line "$FSTAB" "$line" && continue
		if [ -n "$FSTAB_NO_EOL" ]; then
			printf '\n' >>"$FSTAB"
			FSTAB_NO_EOL=""
		fi
		printf '%s\n' "$line" >>"$FSTAB"
	done <"$MNT/fstab"
}

mount_shares_early() {
	[ -d "$CLOUD_INIT_RUN" ] || return 0
	add_shares_to_fstab
	[ -f "$MNT/fstab" ] || return 0
	while IFS= read -r line; do
		[ -n "$line" ] || continue
		# shellcheck disable=SC2086 # fields: tag, mount point, type, options, 0, 0
		set -- $line
		[ $# -eq 6 ] || continue
		is_mounted "$2" && continue
		{ [ -d "$2" ] || mkdir -p "$2"; } && $MOUNT "$2" ||
			WARNING "mounting $2 failed; the host agent tries again"
	done <"$MNT/fstab"
}

# Give user scripts a systemd user instance (systemctl --user) when the guest has one.
start_user_manager() {
	[ "$SYSTEMD_USER_TIMEOUT" -gt 0 ] && [ -z "$RUN_AS" ] || return 0
	[ "$LIMA_BOOT_UID" -eq 0 ] && [ -d "$SYSTEMD_DIR" ] || return 0
	command -v loginctl >/dev/null 2>&1 || return 0
	loginctl enable-linger "$1" >/dev/null 2>&1 || return 0
	waited=0
	until [ -e "/run/user/$2/systemd/private" ]; do
		if [ "$waited" -ge "$SYSTEMD_USER_TIMEOUT" ]; then
			WARNING "systemd user instance of $1 not up after ${SYSTEMD_USER_TIMEOUT}s"
			return 0
		fi
		sleep 1
		waited=$((waited + 1))
	done
}

# busybox su and util-linux su take the same options when they come first; the tiny
# guest's `sudo` is a root-only shim, so sudo comes last.
run_as() {
	if [ -n "$RUN_AS" ]; then
		# shellcheck disable=SC2086 # a command prefix: word splitting wanted
		$RUN_AS "$1" /bin/sh "$2"
	elif command -v runuser >/dev/null 2>&1; then
		runuser -u "$1" -- /bin/sh "$2"
	elif command -v su >/dev/null 2>&1; then
		# The path has no spaces (mktemp under /tmp).
		su -s /bin/sh -c "/bin/sh $2" "$1"
	else
		sudo -u "$1" -- /bin/sh "$2"
	fi
}

# Single-quote a value for a shell assignment.
sq() {
	printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# The seed is mounted 0700 for root, so each user script is copied to a private temp
# directory with a wrapper that sets up the user's environment.
run_user_script() {
	user="$1" uid="$2" home="$3" f="$4"
	dir=$(mktemp -d /tmp/lima-user.XXXXXX) || {
		record_failure "$f: cannot create a temporary directory"
		return
	}
	cp "$f" "$dir/script"
	{
		echo "HOME=$(sq "$home")"
		echo "USER=$(sq "$user")"
		echo "LOGNAME=$(sq "$user")"
		[ -d "/run/user/$uid" ] && echo "XDG_RUNTIME_DIR=/run/user/$uid"
		cat "$MNT/param.env" 2>/dev/null
	} >"$dir/env"
	cat >"$dir/run" <<'WRAPPER'
d=$(dirname "$0")
set -a
. "$d/env"
set +a
cd "$HOME" 2>/dev/null || cd /
if [ "$(head -c 2 "$d/script")" = "#!" ]; then exec "$d/script"; fi
exec /bin/sh "$d/script"
WRAPPER
	chmod 700 "$dir" "$dir/script"
	chown -R "$user" "$dir" 2>/dev/null || chown -R "$uid" "$dir"
	INFO "Executing $f (as user $user)"
	run_step "${f#"$MNT"/}" run_as "$user" "$dir/run"
	rm -rf "$dir"
}

# `cat "$1" >>"$2"` with the read builtin, byte for byte (a last line without a newline
# stays so): each program costs the guest tens of ms of CPU under TCG.
append_file() {
	{
		while IFS= read -r line; do
			printf '%s\n' "$line" || return 1
		done
		[ -z "$line" ] || printf '%s' "$line"
	} <"$1" >>"$2"
}

install_etc_environment() {
	[ -f "$MNT/etc_environment" ] || return 0
	if [ -f "$ETC_ENVIRONMENT" ] && has_line "$ETC_ENVIRONMENT" "#LIMA-START"; then
		sed -i '/^#LIMA-START$/,/^#LIMA-END$/d' "$ETC_ENVIRONMENT" ||
			record_failure "cannot update $ETC_ENVIRONMENT"
	fi
	append_file "$MNT/etc_environment" "$ETC_ENVIRONMENT" ||
		record_failure "cannot write $ETC_ENVIRONMENT"
}

# LIMA_BOOT_UID: this script's effective uid (Uid: real effective saved fs), from /proc
# rather than id(1), exported for the boot scripts' root checks.
read_uid() {
	while read -r _key _real LIMA_BOOT_UID _rest; do
		[ "$_key" = Uid: ] && export LIMA_BOOT_UID && return 0
	done </proc/self/status
	LIMA_BOOT_UID=$(id -u) && export LIMA_BOOT_UID
} 2>/dev/null

main() {
	read_uid
	load_env_file "$MNT/lima.env"
	# The mount point actually used wins over the one written in lima.env.
	LIMA_CIDATA_MNT="$MNT"
	load_env_file "$MNT/param.env"
	load_pam_env_file "$MNT/etc_environment"
	PATH="$MNT/util:$PATH"
	export PATH
	IID="${LIMA_CIDATA_IID:-}"
	[ -n "$IID" ] || read_seed_iid
	INFO "boot.sh starting, IID $IID"
	# Programs only where there is work for them: each costs tenths of a second of guest
	# CPU under TCG while the system starts, and Running waits for this script.
	[ -d "$RUN_DIR" ] || mkdir -p "$RUN_DIR"
	# Started by cloud-init's bootcmd beside the unit of `boot.sh --mounts`, which mounts
	# the shares: mounting them here too raced it.
	if [ -z "${LIMA_BOOT_SHARES_UNIT:-}" ]; then
		mount_shares_early
		write_shares_done "$IID"
	fi
	if [ -e "$RUN_DIR/lima-boot-done" ] || [ -e "$RUN_DIR/lima-boot-failed" ]; then
		rm -f "$RUN_DIR/lima-boot-done" "$RUN_DIR/lima-boot-failed"
	fi

	install_etc_environment
	write_marker lima-ssh-ready "$IID"

	STEP_LOGS="$RUN_DIR/lima-provision"
	[ ! -e "$STEP_LOGS" ] || rm -rf "$STEP_LOGS"
	mkdir -p -m 755 "$STEP_LOGS"

	run_root_dir "$MNT/boot" '*'
	wait_for_mounts
	run_root_dir "$MNT/provision.dependency" '*'
	run_root_dir "$MNT/provision.data" '*.sh'
	run_yq_dir
	run_root_dir "$MNT/provision.system" '*'

	if has_files "$MNT/provision.user"; then
		user="${LIMA_CIDATA_USER:-}"
		if [ -z "$user" ] || ! wait_for_user "$user"; then
			record_failure "user '$user' does not exist after ${USER_TIMEOUT}s; user provisioning skipped"
		else
			uid=$(id -u "$user")
			home="${LIMA_CIDATA_HOME:-}"
			[ -n "$home" ] || home=$(awk -F: -v u="$user" '$1 == u { print $6 }' /etc/passwd)
			start_user_manager "$user" "$uid"
			for f in "$MNT"/provision.user/*; do
				[ -f "$f" ] || continue
				run_user_script "$user" "$uid" "$home" "$f"
			done
		fi
	fi

	wait_for_cloud_init
	check_cloud_init_features

	if [ -n "$FAILURES" ]; then
		write_marker lima-boot-failed "$IID
${FAILURES%
}"
		INFO "boot.sh finished with failures"
	else
		write_marker lima-boot-done "$IID"
		INFO "boot.sh finished"
	fi
}

# `boot.sh --mounts`: only the shares, into fstab and mounted, then $RUN/lima-shares-done.
# cloud-init's bootcmd starts it as a unit of its own, as soon as the system is up
# (basic.target), while boot.sh itself may not have got that far yet; nothing in
# cloud-init waits for it, boot.sh's provisioning does (wait_for_mounts).
if [ "${1:-}" = "--mounts" ]; then
	mount_shares_early
	read_seed_iid
	write_shares_done "$IID"
	exit 0
fi

if ! (: >>"$CONSOLE") 2>/dev/null; then
	CONSOLE=/dev/null
fi
# The log's directory (dirname's, without running it), when missing.
case "$LOG" in */*) log_dir="${LOG%/*}" ;; *) log_dir=. ;; esac
[ -d "${log_dir:-/}" ] || mkdir -p "${log_dir:-/}" 2>/dev/null
main "$@" 2>&1 | tee -a "$LOG" >"$CONSOLE"
[ -f "$RUN_DIR/lima-boot-done" ] && [ ! -f "$RUN_DIR/lima-boot-failed" ]
