#!/bin/sh
# additionalDisks: give each Lima disk a file system at first use and mount it at
# /mnt/lima-NAME (swap: swapon), on every boot. Run as root by boot.sh.
#
# From lima.env (lima/drivers/cloudconfig.py): LIMA_CIDATA_DISKS and, per disk i,
# LIMA_CIDATA_DISK_<i>_{NAME,DEVICE,FORMAT,FSTYPE,FSARGS}. As Lima: a disk is new when
# no file system is labelled `lima-NAME`; with FORMAT true it gets one GPT partition and
# mkfs.FSTYPE (ext4 by default) -L lima-NAME FSARGS on it. Unlike Lima, a disk that
# already holds a partition table or a file system under another label is never
# formatted: the script fails instead, naming the disk, so no user data is wiped.
[ "${LIMA_CIDATA_DISKS:-0}" -gt 0 ] 2>/dev/null || exit 0
# Root only: boot.sh's effective uid (LIMA_BOOT_UID, read from /proc), else id(1).
[ "${LIMA_BOOT_UID:-$(id -u)}" -eq 0 ] || exit 0

failed=0
fail() {
	echo "20-disks.sh: disk $name: $*" >&2
	failed=1
}

labelled() { # the device holding label $1, if any
	[ -b "/dev/disk/by-label/$1" ] && { echo "/dev/disk/by-label/$1"; return 0; }
	findfs "LABEL=$1" 2>/dev/null
}

# After sfdisk the kernel re-reads the partition table, and udev, seeing the disk closed
# after a write, makes it read it once more: the partition's node can vanish and come back
# between the wait below and mkfs ("No such file or directory"). Let udev finish first.
settle() {
	command -v udevadm >/dev/null 2>&1 && udevadm settle --timeout=10 2>/dev/null
	return 0
}

wait_block() { # up to ~10 s for block device $1 to appear
	n=0
	while [ ! -b "$1" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
	[ -b "$1" ]
}

has_data() { # any partition or file system signature on device $1
	ls "$1"?* >/dev/null 2>&1 && return 0
	[ -n "$(blkid -p -o value -s TYPE "$1" 2>/dev/null)" ] && return 0
	[ -n "$(blkid -p -o value -s PTTYPE "$1" 2>/dev/null)" ]
}

format_disk() { # $1 device, $2 partition
	if has_data "$1"; then
		fail "$1 holds data without the label lima-$name; not formatting it (label it" \
			"lima-$name, or wipe it yourself)"
		return 1
	fi
	command -v sfdisk >/dev/null 2>&1 || { fail "sfdisk not found"; return 1; }
	if [ "$fstype" = swap ]; then
		echo 'type=swap' | sfdisk -q --label gpt "$1" || { fail "sfdisk failed"; return 1; }
		settle
		wait_block "$2" || { fail "$2 did not appear"; return 1; }
		# shellcheck disable=SC2086
		mkswap $fsargs -L "lima-$name" "$2" || { fail "mkswap failed"; return 1; }
	else
		echo 'type=linux' | sfdisk -q --label gpt "$1" || { fail "sfdisk failed"; return 1; }
		settle
		wait_block "$2" || { fail "$2 did not appear"; return 1; }
		# shellcheck disable=SC2086
		"mkfs.$fstype" $fsargs -L "lima-$name" "$2" || { fail "mkfs.$fstype failed"; return 1; }
	fi
}

i=0
while [ "$i" -lt "$LIMA_CIDATA_DISKS" ]; do
	eval "name=\${LIMA_CIDATA_DISK_${i}_NAME:-}"
	eval "dev=\${LIMA_CIDATA_DISK_${i}_DEVICE:-}"
	eval "format=\${LIMA_CIDATA_DISK_${i}_FORMAT:-true}"
	eval "fstype=\${LIMA_CIDATA_DISK_${i}_FSTYPE:-ext4}"
	eval "fsargs=\${LIMA_CIDATA_DISK_${i}_FSARGS:-}"
	i=$((i + 1))
	device="/dev/$dev"
	part="${device}1"
	if ! wait_block "$device"; then
		fail "$device not found"
		continue
	fi
	if [ -z "$(labelled "lima-$name")" ]; then
		[ "$format" = true ] && { format_disk "$device" "$part" || continue; }
	fi
	wait_block "$part" || { fail "$part not found (format: false and no file system?)"; continue; }
	if [ "$fstype" = swap ]; then
		grep -qs "^$part " /proc/swaps || swapon "$part" || fail "swapon $part failed"
		continue
	fi
	mnt="/mnt/lima-$name"
	mkdir -p "$mnt"
	if ! grep -qs " $mnt " /proc/mounts; then
		mount -t "$fstype" "$part" "$mnt" || { fail "mount $part $mnt failed"; continue; }
	fi
	echo "20-disks.sh: disk $name ($part, $fstype) mounted on $mnt"
done
exit "$failed"
