#!/bin/sh
# Install and start the guest agent (util/lima-guestagent, or util/lima-guestagent.sh on
# guests without python3): it reports listening ports to the host agent over the virtio
# port io.lima-vm.guest_agent.0 (see lima/drivers/hostagent/portfwd.py). Under systemd it
# is a transient unit restarted when it dies; elsewhere a respawn loop in its own session.
# Root only: boot.sh's effective uid (LIMA_BOOT_UID, read from /proc), else id(1).
# LIMA_BOOT_BIN_DIR and LIMA_BOOT_SYSTEMD_RUN_DIR are for limapy's tests.
[ "${LIMA_BOOT_UID:-$(id -u)}" -eq 0 ] || exit 0
src="${LIMA_CIDATA_MNT}/util"
dest="${LIMA_BOOT_BIN_DIR:-/usr/local/bin}"
run="${LIMA_BOOT_SYSTEMD_RUN_DIR:-/run/systemd}"
# Programs only where there is work: each costs the guest tens of ms of CPU under TCG.
[ -d "$dest" ] || mkdir -p "$dest"
if command -v python3 >/dev/null 2>&1; then
	agent="$dest/lima-guestagent"
	cp "$src/lima-guestagent" "$agent.tmp"
else
	agent="$dest/lima-guestagent.sh"
	cp "$src/lima-guestagent.sh" "$agent.tmp"
fi
chmod 755 "$agent.tmp" && mv -f "$agent.tmp" "$agent" || exit 1

if [ -d "$run/system" ] && command -v systemd-run >/dev/null 2>&1; then
	# Only when this boot already has the unit (boot.sh run again): each systemctl call
	# waits on a PID 1 that is busy starting the rest of the boot.
	if [ -e "$run/transient/lima-guestagent.service" ]; then
		systemctl stop lima-guestagent.service >/dev/null 2>&1
		systemctl reset-failed lima-guestagent.service >/dev/null 2>&1
	fi
	# A tenth of the default CPU weight while the system starts: Running waits for
	# cloud-init's last stages and boot.sh, not for the agent (its Python start costs the
	# guest 1-1.5 s of CPU under TCG), which then has the vCPUs to itself. A systemd that
	# refuses the property gets the unit without it.
	systemd-run --no-block --collect --unit=lima-guestagent -p StartupCPUWeight=10 \
		-p Restart=always -p RestartSec=1 "$agent" 2>/dev/null && exit 0
	exec systemd-run --no-block --collect --unit=lima-guestagent \
		-p Restart=always -p RestartSec=1 "$agent"
fi
pidfile=/run/lima-guestagent.pid
if [ -f "$pidfile" ]; then
	kill "$(cat "$pidfile")" 2>/dev/null
fi
# Detached from boot.sh's output pipe, or boot.sh's tee would wait for the agent forever.
setsid /bin/sh -c 'echo $$ >"$1"; while :; do "$2"; sleep 1; done' lima-guestagent \
	"$pidfile" "$agent" </dev/null >/dev/null 2>&1 &
exit 0
