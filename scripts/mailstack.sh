#!/usr/bin/env bash
# mailstack.sh - two real mail domains (a.test, b.test) on loopback for the
# emailqos integration tests.
#
#   scripts/mailstack.sh start   [DIR]   install what is missing, start (idempotent)
#   scripts/mailstack.sh stop    [DIR]   stop every process of the stack
#   scripts/mailstack.sh restart [DIR]
#   scripts/mailstack.sh status  [DIR]   exit 0 only if every listener answers
#   scripts/mailstack.sh env     [DIR]   print `export` lines describing the stack
#   scripts/mailstack.sh adduser ADDRESS PASSWORD [DIR]
#                                        add (or re-password) an a.test/b.test account
#   scripts/mailstack.sh relay DOMAIN HOST:PORT|off [DIR]
#                                        route DOMAIN's (a or b) mail for the other
#                                        domain through HOST:PORT (e.g. a delaying
#                                        relay), or back to the other MX (off);
#                                        `start` also routes it back
#   scripts/mailstack.sh install         only install the Debian packages
#
# Typical test use:   scripts/mailstack.sh start && eval "$(scripts/mailstack.sh env)"
#
# Run as root on Debian 12. Packages missing are installed with apt-get
# (non-interactive; postfix preseeded to "No configuration"; the system-wide
# postfix/dovecot services are kept stopped and disabled). DIR defaults to
# $EMAILQOS_MAILSTACK_DIR, else /tmp/emailqos-mailstack, and holds everything:
# the throwaway CA (ca/ca.crt), and per domain x in {a,b}: x/postfix (postfix
# config_directory, started with `postfix -c`), x/spool (queue), x/dovecot
# (dovecot.conf, passwd-file `users`), x/run (dovecot base_dir, LMTP and SASL
# sockets), x/mail/LOCALPART/Maildir, x/log/postfix.log and x/log/dovecot.log.
# Nothing under /etc/postfix or /etc/dovecot is used.
#
# Layout (defaults; `env` prints the real values):
#
#   domain  host       MX     SMTP    SMTP      SMTPS  IMAP     IMAPS  POP3     POP3S
#                             plain   STARTTLS         (+STLS)         (+STLS)
#   a.test  127.0.0.1  12525  12526   12587     12565  12543    12593  12510    12595
#   b.test  127.0.0.2  12625  12626   12687     12665  12643    12693  12610    12695
#
#   MX             inbound MTA (no AUTH, STARTTLS offered), accepts mail for its
#                  own domain only; the other domain's postfix relays to it.
#   SMTP plain     submission without TLS (STARTTLS not offered), AUTH in clear.
#   SMTP STARTTLS  submission; STARTTLS required before AUTH and MAIL.
#   SMTPS          submission over implicit TLS.
#   Submission always requires AUTH (PLAIN, LOGIN; dovecot SASL).
#   IMAP, POP3     one port for plain and STARTTLS: STARTTLS offered, plaintext
#                  LOGIN / USER+PASS / AUTH PLAIN allowed without it.
#   IMAPS, POP3S   implicit TLS.
#
# Certificates (signed by DIR/ca/ca.crt) name DOMAIN, mail./mx./smtp./imap./pop.
# DOMAIN, localhost, the domain's IP and 127.0.0.1.
# Ports: a.test uses BASE+offset, b.test BASE+100+offset, with
# BASE=$EMAILQOS_MAILSTACK_PORT_BASE (default 12500); hosts come from
# $EMAILQOS_MAILSTACK_A_HOST / $EMAILQOS_MAILSTACK_B_HOST (127.0.0.0/8; the
# whole range is local on Linux). They are fixed at the first start and kept
# while the stack runs. Start waits up to $EMAILQOS_MAILSTACK_WAIT_TIMEOUT
# seconds (default 30) for every listener to answer.
#
# Accounts (login name = address): probe@a.test/probe-a-pw, user@a.test/user-a-pw,
# probe@b.test/probe-b-pw, user@b.test/user-b-pw; postmaster@ and abuse@ are
# aliases of user@. Mail is stored by dovecot (uid vmail) in Maildir.
# Dovecot allows 10 IMAP sessions per user and client IP (its default
# mail_max_userip_connections; `env` prints it as EMAILQOS_IMAP_USERIP_LIMIT).
#
# Mail flow: submission -> postfix -> own domain: LMTP into dovecot -> Maildir;
# other test domain: SMTP to the other postfix's MX port (transport map, no
# DNS, opportunistic TLS verified against the CA) -> LMTP -> Maildir; any other
# domain is rejected at RCPT TO (nothing leaves loopback). Retries are quick
# (queue run every 5s) so a stopped peer catches up soon after it restarts.
set -euo pipefail

readonly PROG=${0##*/}
readonly DOMAINS=(a b)
readonly PACKAGES=(postfix dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd openssl swaks libnet-ssleay-perl procps)
readonly VMAIL_USER=vmail
WAIT_TIMEOUT=${EMAILQOS_MAILSTACK_WAIT_TIMEOUT:-30}
# IMAP sessions Dovecot allows per user and client IP (its default).
readonly IMAP_USERIP_LIMIT=10

# Port offsets inside a domain's block.
readonly OFF_MX=25 OFF_SMTP_PLAIN=26 OFF_SMTP_STARTTLS=87 OFF_SMTPS=65
readonly OFF_IMAP=43 OFF_IMAPS=93 OFF_POP3=10 OFF_POP3S=95

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

usage() { # the header comment; exit status $1
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit "${1:-2}"
}

# ---------------------------------------------------------------- installation

pkg_installed() {
	[[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		pkg_installed "$p" || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	[[ $(id -u) == 0 ]] || die "packages missing (${missing[*]}) and not root: run as root"
	command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and no apt-get"
	log "installing ${missing[*]} (apt-get, non-interactive)"
	local t0=$SECONDS
	export DEBIAN_FRONTEND=noninteractive
	# No system-wide postfix configuration: no /etc/postfix/main.cf, so the
	# package cannot start a main instance on port 25.
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	# Keep maintainer scripts from starting the system services at all.
	local policy=/usr/sbin/policy-rc.d own_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\n# temporary, written by emailqos mailstack.sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		own_policy=1
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	local apt_opts=(-q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
	local rc=0 aptlog
	aptlog=$(mktemp /tmp/emailqos-mailstack-apt.XXXXXX)
	{ apt-get "${apt_opts[@]}" update && apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}"; } >"$aptlog" 2>&1 || rc=$?
	if ((own_policy)); then
		rm -f "$policy"
		trap - EXIT
	fi
	if ((rc)); then
		tail -n 30 "$aptlog" >&2
		die "apt-get failed (exit $rc); full log: $aptlog"
	fi
	rm -f "$aptlog"
	disable_system_services
	log "packages installed in $((SECONDS - t0))s"
}

# The stack runs its own instances; make sure the packages' system-wide
# daemons are neither running nor started at boot.
disable_system_services() {
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
		systemctl disable --now postfix.service dovecot.service dovecot.socket >/dev/null 2>&1 || true
	else
		local s
		for s in postfix dovecot; do
			[[ -x /etc/init.d/$s ]] && { update-rc.d "$s" disable >/dev/null 2>&1 || true; }
		done
	fi
	local pid
	pid=$(pid_from_file /run/dovecot/master.pid)
	[[ -n $pid ]] && { log "stopping system dovecot (pid $pid)"; kill "$pid" 2>/dev/null || true; }
	pid=$(pid_from_file /var/spool/postfix/pid/master.pid)
	[[ -n $pid ]] && { log "stopping system postfix (pid $pid)"; kill "$pid" 2>/dev/null || true; }
	return 0
}

ensure_vmail_user() {
	getent passwd "$VMAIL_USER" >/dev/null && return 0
	getent group "$VMAIL_USER" >/dev/null || groupadd --system "$VMAIL_USER"
	useradd --system --gid "$VMAIL_USER" --home-dir /nonexistent --no-create-home \
		--shell /usr/sbin/nologin --comment "emailqos mailstack virtual mail" "$VMAIL_USER"
}

# ---------------------------------------------------------------- helpers

pid_from_file() { # prints the pid if the file names a live process
	local f=$1 pid
	[[ -r $f ]] || return 0
	pid=$(tr -dc '0-9' <"$f" 2>/dev/null || true)
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
	return 0
}

alive() { # a process that exists and is not a zombie waiting to be reaped
	local st
	{ read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
	st=${st##*) }
	[[ ${st%% *} != Z ]]
}

zombie() {
	local st
	{ read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
	st=${st##*) }
	[[ ${st%% *} == Z ]]
}

descendants() { # pid and all its descendants
	ps -e -o pid=,ppid= | awk -v root="$1" '
		{ kids[$2] = kids[$2] " " $1 }
		END {
			queue[1] = root; n = 1
			for (i = 1; i <= n; i++) {
				print queue[i]
				c = split(kids[queue[i]], k, " ")
				for (j = 1; j <= c; j++) queue[++n] = k[j]
			}
		}'
}

# Processes of this DIR's daemons, even if their master is gone: a postfix
# or dovecot binary whose working directory is inside DIR (postfix daemons
# run in their queue directory, dovecot's in its base_dir or a mail home).
stray_pids() {
	local link pid exe
	{ find /proc -mindepth 2 -maxdepth 2 -name cwd \( -lname "$DIR" -o -lname "$DIR/*" \) 2>/dev/null || true; } |
		while read -r link; do
			pid=${link#/proc/}
			pid=${pid%/cwd}
			exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
			case $exe in
			/usr/sbin/dovecot | /usr/lib/dovecot/* | /usr/lib/postfix/* | /usr/sbin/post*) echo "$pid" ;;
			esac
		done
}

fingerprint() { cat "$@" 2>/dev/null | cksum || true; }

# quote a value for the shell (bare when it is safe)
q() {
	if [[ $1 =~ ^[A-Za-z0-9_./:@+=,-]+$ ]]; then
		printf '%s' "$1"
	else
		printf "'%s'" "${1//\'/\'\\\'\'}"
	fi
}

port_of() { # DOMAIN OFFSET
	local base=$PORT_BASE
	[[ $1 == b ]] && base=$((PORT_BASE + 100))
	echo $((base + $2))
}

# Talk to a listener: PROTO(smtp|imap|pop3) TLS(0|1) HOST PORT. Succeeds if
# the greeting is right (and, with TLS, the certificate verifies against the CA).
probe_listener() {
	local proto=$1 tls=$2 host=$3 port=$4 want quit out
	case $proto in
	smtp) want='^220 ' quit='QUIT' ;;
	imap) want='^\* OK' quit='a LOGOUT' ;;
	pop3) want='^\+OK' quit='QUIT' ;;
	esac
	if ((tls)); then
		out=$(printf '%s\r\n' "$quit" | timeout 5 openssl s_client -connect "$host:$port" \
			-CAfile "$CA_CRT" -verify_return_error -quiet 2>/dev/null | head -n 1) || true
	else
		# shellcheck disable=SC2016 # expanded by the inner bash
		out=$(timeout 5 bash -c '
			exec 3<>"/dev/tcp/$1/$2" || exit 1
			IFS= read -r -t 4 line <&3 || exit 1
			printf "%s\r\n" "$3" >&3
			printf "%s\n" "$line"' _ "$host" "$port" "$quit" 2>/dev/null) || true
	fi
	[[ $out =~ $want ]]
}

# shellcheck disable=SC2016 # expanded by the inner bash
port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }

# listeners of one domain: "proto tls name offset"
listeners() {
	cat <<-EOF
		smtp 0 MX $OFF_MX
		smtp 0 SMTP_PLAIN $OFF_SMTP_PLAIN
		smtp 0 SMTP_STARTTLS $OFF_SMTP_STARTTLS
		smtp 1 SMTPS $OFF_SMTPS
		imap 0 IMAP $OFF_IMAP
		imap 1 IMAPS $OFF_IMAPS
		pop3 0 POP3 $OFF_POP3
		pop3 1 POP3S $OFF_POP3S
	EOF
}

host_of() { if [[ $1 == a ]]; then echo "$A_HOST"; else echo "$B_HOST"; fi; }

# ---------------------------------------------------------------- state

# DIR/state.env fixes hosts and ports while the stack lives.
load_state() {
	local f=$DIR/state.env
	if [[ -r $f ]]; then
		# shellcheck disable=SC1090
		source "$f"
	else
		return 1
	fi
}

choose_state() {
	PORT_BASE=${EMAILQOS_MAILSTACK_PORT_BASE:-12500}
	A_HOST=${EMAILQOS_MAILSTACK_A_HOST:-127.0.0.1}
	B_HOST=${EMAILQOS_MAILSTACK_B_HOST:-127.0.0.2}
	if ! [[ $PORT_BASE =~ ^[0-9]+$ ]] || ((PORT_BASE < 1024 || PORT_BASE > 65000)); then
		die "EMAILQOS_MAILSTACK_PORT_BASE=$PORT_BASE: want a number in 1024..65000"
	fi
	local h
	for h in "$A_HOST" "$B_HOST"; do
		[[ $h =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "host $h is not a 127.0.0.0/8 address"
	done
}

save_state() {
	cat >"$DIR/state.env" <<-EOF
		PORT_BASE=$PORT_BASE
		A_HOST=$A_HOST
		B_HOST=$B_HOST
	EOF
}

set_paths() {
	CA_CRT=$DIR/ca/ca.crt
	CA_KEY=$DIR/ca/ca.key
}

# ---------------------------------------------------------------- users

# DIR/users: "address password" lines, the source of every account file.
default_users() {
	cat <<-'EOF'
		probe@a.test probe-a-pw
		user@a.test user-a-pw
		probe@b.test probe-b-pw
		user@b.test user-b-pw
	EOF
}

# domain letter of an address, or nothing
domain_letter() {
	case ${1##*@} in
	a.test) echo a ;;
	b.test) echo b ;;
	esac
}

write_if_changed() { # FILE MODE; content on stdin. Returns 0 if changed.
	local f=$1 mode=$2 tmp
	tmp=$(mktemp "$f.XXXXXX")
	cat >"$tmp"
	chmod "$mode" "$tmp"
	if [[ -f $f ]] && cmp -s "$tmp" "$f"; then
		rm -f "$tmp"
		return 1
	fi
	mv -f "$tmp" "$f"
	return 0
}

# Regenerate the per-domain account files from DIR/users. Returns 0 if any
# postfix map changed (postfix then needs a reload; dovecot rereads its
# passwd-file by itself).
render_accounts() {
	local d changed=1 addr pw local_part
	for d in "${DOMAINS[@]}"; do
		local dom=$d.test users_tmp="" vmbox="" 
		while read -r addr pw; do
			[[ -z $addr || $addr == \#* ]] && continue
			[[ $(domain_letter "$addr") == "$d" ]] || continue
			local_part=${addr%@*}
			users_tmp+="$addr:{PLAIN}$pw::::::"$'\n'
			vmbox+="$addr OK"$'\n'
			local home=$DIR/$d/mail/$local_part
			if [[ ! -d $home/Maildir/new ]]; then
				install -d -o "$VMAIL_USER" -g "$VMAIL_USER" -m 700 "$home" "$home/Maildir" \
					"$home/Maildir/cur" "$home/Maildir/new" "$home/Maildir/tmp"
			fi
		done <"$DIR/users"
		printf '%s' "$users_tmp" | write_if_changed "$DIR/$d/dovecot/users" 640 || true
		chgrp dovecot "$DIR/$d/dovecot/users"
		if printf '%s' "$vmbox" | write_if_changed "$DIR/$d/postfix/vmailbox" 644; then changed=0; fi
		if printf 'postmaster@%s user@%s\nabuse@%s user@%s\n' "$dom" "$dom" "$dom" "$dom" |
			write_if_changed "$DIR/$d/postfix/valias" 644; then changed=0; fi
	done
	return $changed
}

# ---------------------------------------------------------------- TLS

make_certs() {
	install -d -m 755 "$DIR/ca"
	local want_san d host
	if [[ ! -s $CA_CRT || ! -s $CA_KEY ]] || ! openssl x509 -in "$CA_CRT" -noout -checkend 86400 >/dev/null 2>&1; then
		log "creating throwaway CA in $DIR/ca"
		rm -f "$DIR"/{a,b}/tls/server.crt
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout "$CA_KEY" -out "$CA_CRT" -days 3650 -subj "/O=emailqos mailstack/CN=emailqos mailstack test CA" \
			-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
			>/dev/null 2>&1 || die "openssl: cannot create the CA"
		chmod 600 "$CA_KEY"
	fi
	for d in "${DOMAINS[@]}"; do
		host=$(host_of "$d")
		local tls=$DIR/$d/tls dom=$d.test
		install -d -m 755 "$tls"
		want_san="DNS:$dom,DNS:mail.$dom,DNS:mx.$dom,DNS:smtp.$dom,DNS:imap.$dom,DNS:pop.$dom,DNS:localhost,IP:$host"
		[[ $host == 127.0.0.1 ]] || want_san+=",IP:127.0.0.1"
		if [[ -s $tls/server.crt && -s $tls/server.key && $(cat "$tls/san" 2>/dev/null) == "$want_san" ]] &&
			openssl x509 -in "$tls/server.crt" -noout -checkend 86400 >/dev/null 2>&1; then
			continue
		fi
		log "creating server certificate for $dom ($want_san)"
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout "$tls/server.key" -out "$tls/server.csr" -subj "/O=emailqos mailstack/CN=mail.$dom" \
			>/dev/null 2>&1 || die "openssl: cannot create the key for $dom"
		printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
			"$want_san" >"$tls/ext.cnf"
		openssl x509 -req -in "$tls/server.csr" -CA "$CA_CRT" -CAkey "$CA_KEY" -CAcreateserial \
			-days 825 -extfile "$tls/ext.cnf" -out "$tls/server.crt" >/dev/null 2>&1 ||
			die "openssl: cannot sign the certificate for $dom"
		cat "$tls/server.crt" "$CA_CRT" >"$tls/chain.crt"
		chmod 600 "$tls/server.key"
		echo "$want_san" >"$tls/san"
		rm -f "$tls/server.csr"
		CERTS_CHANGED=1
	done
}

# ---------------------------------------------------------------- configs

render_postfix() { # DOMAIN
	local d=$1 o=a
	[[ $d == a ]] && o=b
	local dom=$d.test odom=$o.test host ohost conf=$DIR/$d/postfix
	host=$(host_of "$d")
	ohost=$(host_of "$o")
	install -d -m 755 "$conf" "$DIR/$d/log"
	install -d -m 755 -o root "$DIR/$d/spool"
	install -d -m 700 -o postfix "$DIR/$d/postfix-data"

	printf '%s smtp:[%s]:%s\n' "$odom" "$ohost" "$(port_of "$o" $OFF_MX)" |
		write_if_changed "$conf/transport" 644 || true

	write_if_changed "$conf/main.cf" 644 <<-EOF || true
		# emailqos mailstack: postfix instance of $dom (generated by $PROG; edits are lost)
		compatibility_level = 3.6
		queue_directory = $DIR/$d/spool
		data_directory = $DIR/$d/postfix-data
		mail_owner = postfix
		setgid_group = postdrop
		syslog_name = postfix-$d
		maillog_file = $DIR/$d/log/postfix.log
		maillog_file_prefixes = $DIR/
		myhostname = mx.$dom
		mydomain = $dom
		myorigin = $dom
		mydestination =
		mynetworks = $host/32
		inet_interfaces = loopback-only
		inet_protocols = ipv4
		smtp_bind_address = $host
		alias_maps =
		alias_database =
		local_recipient_maps =
		local_transport = error:5.1.1 local delivery is disabled in the emailqos mailstack
		relay_domains =
		virtual_mailbox_domains = $dom
		virtual_mailbox_maps = texthash:$conf/vmailbox
		virtual_alias_maps = texthash:$conf/valias
		virtual_transport = lmtp:unix:$DIR/$d/run/lmtp
		transport_maps = texthash:$conf/transport
		default_transport = error:5.4.4 the emailqos mailstack routes only a.test and b.test
		recipient_delimiter = +
		biff = no
		append_dot_mydomain = no
		readme_directory = no
		smtputf8_enable = yes
		smtpd_banner = \$myhostname ESMTP emailqos mailstack ($dom)
		smtpd_peername_lookup = no
		smtp_dns_support_level = disabled
		smtpd_error_sleep_time = 0s
		smtpd_hard_error_limit = 100
		in_flow_delay = 0s
		queue_run_delay = 5s
		minimal_backoff_time = 5s
		maximal_backoff_time = 30s
		maximal_queue_lifetime = 1h
		bounce_queue_lifetime = 1h
		# Inbound (MX) defaults; the submission services override them in master.cf.
		smtpd_sasl_auth_enable = no
		smtpd_sasl_type = dovecot
		smtpd_sasl_path = $DIR/$d/run/auth-postfix
		smtpd_sasl_security_options = noanonymous
		smtpd_relay_restrictions = reject_unauth_destination
		smtpd_recipient_restrictions = reject_unauth_destination
		smtpd_tls_chain_files = $DIR/$d/tls/server.key, $DIR/$d/tls/chain.crt
		smtpd_tls_security_level = may
		smtpd_tls_loglevel = 1
		smtpd_tls_received_header = yes
		smtpd_tls_mandatory_protocols = >=TLSv1.2
		smtpd_tls_protocols = >=TLSv1.2
		# Outbound: the MTA-to-MTA hop to the other test domain.
		smtp_tls_security_level = may
		smtp_tls_CAfile = $CA_CRT
		smtp_tls_loglevel = 1
	EOF

	local mx sub_plain sub_starttls smtps
	mx=$(port_of "$d" $OFF_MX)
	sub_plain=$(port_of "$d" $OFF_SMTP_PLAIN)
	sub_starttls=$(port_of "$d" $OFF_SMTP_STARTTLS)
	smtps=$(port_of "$d" $OFF_SMTPS)
	local submission_opts="
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject"
	write_if_changed "$conf/master.cf" 644 <<-EOF || true
		# emailqos mailstack: postfix services of $dom (generated by $PROG)
		# service                 type  private unpriv chroot wakeup maxproc command
		$host:$mx inet n - n - - smtpd
		  -o syslog_name=postfix-$d/mx
		$host:$sub_plain inet n - n - - smtpd
		  -o syslog_name=postfix-$d/submission-plain
		  -o smtpd_tls_security_level=none$submission_opts
		$host:$sub_starttls inet n - n - - smtpd
		  -o syslog_name=postfix-$d/submission-starttls
		  -o smtpd_tls_security_level=encrypt
		  -o smtpd_tls_auth_only=yes$submission_opts
		$host:$smtps inet n - n - - smtpd
		  -o syslog_name=postfix-$d/smtps
		  -o smtpd_tls_wrappermode=yes
		  -o smtpd_tls_security_level=encrypt$submission_opts
		pickup     unix n - n 60 1 pickup
		cleanup    unix n - n - 0 cleanup
		qmgr       unix n - n 300 1 qmgr
		tlsmgr     unix - - n 1000? 1 tlsmgr
		rewrite    unix - - n - - trivial-rewrite
		bounce     unix - - n - 0 bounce
		defer      unix - - n - 0 bounce
		trace      unix - - n - 0 bounce
		verify     unix - - n - 1 verify
		flush      unix n - n 1000? 0 flush
		proxymap   unix - - n - - proxymap
		proxywrite unix - - n - 1 proxymap
		smtp       unix - - n - - smtp
		relay      unix - - n - - smtp
		showq      unix n - n - - showq
		error      unix - - n - - error
		retry      unix - - n - - error
		discard    unix - - n - - discard
		lmtp       unix - - n - - lmtp
		anvil      unix - - n - 1 anvil
		scache     unix - - n - 1 scache
		postlog    unix-dgram n - n - 1 postlogd
	EOF
}

render_dovecot() { # DOMAIN
	local d=$1 dom=$1.test host conf=$DIR/$1/dovecot
	host=$(host_of "$d")
	install -d -m 755 "$conf" "$DIR/$d/log"
	install -d -m 755 -o root "$DIR/$d/run" "$DIR/$d/state"
	install -d -m 750 -o "$VMAIL_USER" -g "$VMAIL_USER" "$DIR/$d/mail"
	local vuid
	vuid=$(id -u "$VMAIL_USER")
	write_if_changed "$conf/dovecot.conf" 644 <<-EOF || true
		# emailqos mailstack: dovecot instance of $dom (generated by $PROG; edits are lost)
		instance_name = emailqos-$d
		base_dir = $DIR/$d/run
		state_dir = $DIR/$d/state
		protocols = imap pop3 lmtp
		listen = $host
		log_path = $DIR/$d/log/dovecot.log
		auth_verbose = yes
		verbose_proctitle = yes
		login_greeting = Dovecot (emailqos mailstack $dom) ready.

		ssl = yes
		ssl_cert = <$DIR/$d/tls/chain.crt
		ssl_key = <$DIR/$d/tls/server.key
		ssl_min_protocol = TLSv1.2

		# Test-only: plaintext authentication is fine on loopback.
		disable_plaintext_auth = no
		auth_mechanisms = plain login
		auth_failure_delay = 0
		auth_username_format = %Lu
		recipient_delimiter = +
		passdb {
		  driver = passwd-file
		  args = scheme=PLAIN username_format=%Lu $conf/users
		}
		userdb {
		  driver = passwd-file
		  args = username_format=%Lu $conf/users
		  default_fields = uid=$VMAIL_USER gid=$VMAIL_USER home=$DIR/$d/mail/%Ln
		}
		first_valid_uid = $vuid
		last_valid_uid = $vuid

		mail_location = maildir:~/Maildir
		mailbox_idle_check_interval = 1 secs
		namespace inbox {
		  inbox = yes
		  separator = /
		  mailbox Drafts {
		    special_use = \\Drafts
		    auto = subscribe
		  }
		  mailbox Sent {
		    special_use = \\Sent
		    auto = subscribe
		  }
		  mailbox Junk {
		    special_use = \\Junk
		    auto = subscribe
		  }
		  mailbox Trash {
		    special_use = \\Trash
		    auto = subscribe
		  }
		}
		postmaster_address = postmaster@$dom
		hostname = mail.$dom

		default_process_limit = 256
		default_client_limit = 2000
		protocol imap {
		  # Dovecot's own default, kept explicit: the integration suite
		  # proves a mesh wider than this stays within it (max_sessions).
		  mail_max_userip_connections = $IMAP_USERIP_LIMIT
		}
		protocol pop3 {
		  pop3_uidl_format = %08Xu%08Xv
		}

		service imap-login {
		  inet_listener imap {
		    port = $(port_of "$d" $OFF_IMAP)
		  }
		  inet_listener imaps {
		    port = $(port_of "$d" $OFF_IMAPS)
		    ssl = yes
		  }
		  service_count = 0
		  process_min_avail = 1
		}
		service pop3-login {
		  inet_listener pop3 {
		    port = $(port_of "$d" $OFF_POP3)
		  }
		  inet_listener pop3s {
		    port = $(port_of "$d" $OFF_POP3S)
		    ssl = yes
		  }
		  service_count = 0
		  process_min_avail = 1
		}
		service lmtp {
		  unix_listener lmtp {
		    user = postfix
		    group = postfix
		    mode = 0660
		  }
		}
		service auth {
		  unix_listener auth-postfix {
		    user = postfix
		    group = postfix
		    mode = 0660
		  }
		}
	EOF
}

# ---------------------------------------------------------------- processes

postfix_pid() {
	local pid
	pid=$(pid_from_file "$DIR/$1/spool/pid/master.pid")
	[[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == master ]] && echo "$pid"
	return 0
}
dovecot_pid() {
	local pid
	pid=$(pid_from_file "$DIR/$1/run/master.pid")
	[[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == dovecot ]] && echo "$pid"
	return 0
}

start_dovecot() {
	local d=$1 pid
	pid=$(dovecot_pid "$d")
	if [[ -n $pid ]]; then
		if ((RELOAD_DOVECOT)); then doveadm -c "$DIR/$d/dovecot/dovecot.conf" reload >/dev/null 2>&1 || true; fi
		return 0
	fi
	# never through $(...): the daemon would inherit and hold the pipe
	local out=$DIR/$d/log/dovecot-start.out
	dovecot -c "$DIR/$d/dovecot/dovecot.conf" </dev/null >"$out" 2>&1 9>&- || {
		cat "$out" >&2
		tail -n 20 "$DIR/$d/log/dovecot.log" >&2 2>/dev/null || true
		die "dovecot for $d.test did not start"
	}
}

start_postfix() {
	local d=$1 conf=$DIR/$1/postfix out
	if [[ -n $(postfix_pid "$d") ]]; then
		if ((RELOAD_POSTFIX)); then postfix -c "$conf" reload >/dev/null 2>&1 || true; fi
		return 0
	fi
	# `postfix start` runs `postfix check` (creates the queue directories with
	# the right owners) and returns once the master listens.
	out=$DIR/$d/log/postfix-start.out
	postfix -c "$conf" start </dev/null >"$out" 2>&1 9>&- || {
		cat "$out" >&2
		tail -n 20 "$DIR/$d/log/postfix.log" >&2 2>/dev/null || true
		die "postfix for $d.test did not start"
	}
}

# every check of the stack: "domain kind proto tls name target"
all_checks() {
	local d proto tls name off host
	for d in "${DOMAINS[@]}"; do
		host=$(host_of "$d")
		while read -r proto tls name off; do
			echo "$d tcp $proto $tls $name $host:$(port_of "$d" "$off")"
		done < <(listeners)
		echo "$d sock - - LMTP $DIR/$d/run/lmtp"
		echo "$d sock - - SASL $DIR/$d/run/auth-postfix"
	done
}

run_check() { # domain kind proto tls name target
	if [[ $2 == sock ]]; then
		[[ -S $6 ]]
	else
		probe_listener "$3" "$4" "${6%:*}" "${6##*:}"
	fi
}

wait_listeners() {
	local deadline=$((SECONDS + WAIT_TIMEOUT)) c d pending=() still
	mapfile -t pending < <(all_checks)
	while :; do
		still=()
		for c in "${pending[@]}"; do
			# shellcheck disable=SC2086
			run_check $c || still+=("$c")
		done
		pending=("${still[@]}")
		((${#pending[@]} == 0)) && return 0
		if ((SECONDS >= deadline)); then
			log "listeners not answering after ${WAIT_TIMEOUT}s:"
			printf '  %s\n' "${pending[@]}" >&2
			for d in "${DOMAINS[@]}"; do
				log "--- $DIR/$d/log/postfix.log (tail)"
				tail -n 15 "$DIR/$d/log/postfix.log" >&2 2>/dev/null || true
				log "--- $DIR/$d/log/dovecot.log (tail)"
				tail -n 15 "$DIR/$d/log/dovecot.log" >&2 2>/dev/null || true
			done
			die "start failed (see above); \`$PROG stop $DIR\` cleans up"
		fi
		sleep 0.1
	done
}

check_ports_free() {
	local d proto tls name off host port busy=()
	for d in "${DOMAINS[@]}"; do
		host=$(host_of "$d")
		while read -r proto tls name off; do
			port=$(port_of "$d" "$off")
			port_open "$host" "$port" && busy+=("$host:$port ($d.test $name)")
		done < <(listeners)
	done
	if ((${#busy[@]})); then
		printf '  %s\n' "${busy[@]}" >&2
		die "ports already in use by something else (another mailstack in another DIR?); stop it or set EMAILQOS_MAILSTACK_PORT_BASE"
	fi
}

# ---------------------------------------------------------------- commands

cmd_start() {
	[[ $(id -u) == 0 ]] || die "start must run as root (postfix and dovecot instances, vmail user)"
	install_packages
	ensure_vmail_user
	install -d -m 755 "$DIR"
	exec 9>"$DIR/.lock"
	flock -w 120 9 || die "another $PROG is working on $DIR"

	local running=0 d
	for d in "${DOMAINS[@]}"; do
		[[ -n $(postfix_pid "$d") || -n $(dovecot_pid "$d") ]] && running=1
	done
	if ((running)) && load_state; then
		log "already running in $DIR: keeping its ports, starting whatever is down"
	else
		((running)) && die "processes of $DIR run but $DIR/state.env is gone: run \`$PROG stop $DIR\` first"
		rm -f "$DIR/state.env"
		choose_state
		check_ports_free
		save_state
	fi
	set_paths
	[[ -f $DIR/users ]] || default_users >"$DIR/users"
	chmod 600 "$DIR/users"

	CERTS_CHANGED=0
	make_certs
	RELOAD_POSTFIX=$CERTS_CHANGED RELOAD_DOVECOT=$CERTS_CHANGED
	local before
	for d in "${DOMAINS[@]}"; do
		install -d -m 755 "$DIR/$d"
		before=$(fingerprint "$DIR/$d/postfix/"{main.cf,master.cf,transport})
		render_postfix "$d"
		[[ $before == "$(fingerprint "$DIR/$d/postfix/"{main.cf,master.cf,transport})" ]] || RELOAD_POSTFIX=1
		before=$(fingerprint "$DIR/$d/dovecot/dovecot.conf")
		render_dovecot "$d"
		[[ $before == "$(fingerprint "$DIR/$d/dovecot/dovecot.conf")" ]] || RELOAD_DOVECOT=1
	done
	render_accounts && RELOAD_POSTFIX=1
	for d in "${DOMAINS[@]}"; do start_dovecot "$d"; done
	for d in "${DOMAINS[@]}"; do start_postfix "$d"; done
	wait_listeners
	log "running: a.test on $A_HOST, b.test on $B_HOST (ports $PORT_BASE+, $((PORT_BASE + 100))+); \`$PROG env $DIR\` describes it"
}

cmd_stop() {
	[[ -d $DIR ]] || { log "nothing to stop ($DIR does not exist)"; return 0; }
	[[ $(id -u) == 0 ]] || die "stop must run as root"
	exec 9>"$DIR/.lock"
	flock -w 120 9 || die "another $PROG is working on $DIR"
	local d pid pids=()
	for d in "${DOMAINS[@]}"; do
		pid=$(postfix_pid "$d")
		if [[ -n $pid ]]; then
			mapfile -t -O "${#pids[@]}" pids < <(descendants "$pid")
			postfix -c "$DIR/$d/postfix" stop >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
		fi
		pid=$(dovecot_pid "$d")
		if [[ -n $pid ]]; then
			mapfile -t -O "${#pids[@]}" pids < <(descendants "$pid")
			kill -TERM "$pid" 2>/dev/null || true
		fi
	done
	mapfile -t -O "${#pids[@]}" pids < <(stray_pids)
	((${#pids[@]})) && mapfile -t pids < <(printf '%s\n' "${pids[@]}" | sort -un)
	local deadline=$((SECONDS + 15)) alive
	while :; do
		alive=()
		for pid in "${pids[@]}"; do
			alive "$pid" && alive+=("$pid")
		done
		((${#alive[@]} == 0)) && break
		if ((SECONDS >= deadline)); then
			log "killing leftover processes: ${alive[*]}"
			kill -KILL "${alive[@]}" 2>/dev/null || true
			sleep 0.5
			break
		fi
		sleep 0.1
	done
	# The daemons detach, so init reaps the masters; wait a little for that
	# so that a pgrep right after stop sees nothing (not even zombies).
	deadline=$((SECONDS + 3))
	while ((SECONDS < deadline)); do
		alive=()
		for pid in "${pids[@]}"; do
			zombie "$pid" && alive+=("$pid")
		done
		((${#alive[@]} == 0)) && break
		sleep 0.1
	done
	local left
	left=$(stray_pids)
	[[ -z $left ]] || die "processes still running: $left"
	log "stopped (${#pids[@]} processes)"
}

cmd_status() {
	load_state || { log "not started ($DIR/state.env missing)"; return 1; }
	set_paths
	local rc=0 d proto tls name off host port pid
	for d in "${DOMAINS[@]}"; do
		host=$(host_of "$d")
		pid=$(postfix_pid "$d")
		printf '%-7s %-14s %-22s %s\n' "$d.test" "postfix" "pid ${pid:--}" "$([[ -n $pid ]] && echo up || echo DOWN)"
		[[ -n $pid ]] || rc=1
		pid=$(dovecot_pid "$d")
		printf '%-7s %-14s %-22s %s\n' "$d.test" "dovecot" "pid ${pid:--}" "$([[ -n $pid ]] && echo up || echo DOWN)"
		[[ -n $pid ]] || rc=1
		while read -r proto tls name off; do
			port=$(port_of "$d" "$off")
			if probe_listener "$proto" "$tls" "$host" "$port"; then
				printf '%-7s %-14s %-22s %s\n' "$d.test" "$name" "$host:$port" ok
			else
				printf '%-7s %-14s %-22s %s\n' "$d.test" "$name" "$host:$port" FAIL
				rc=1
			fi
		done < <(listeners)
	done
	return $rc
}

cmd_env() {
	load_state || die "not started: no $DIR/state.env (run \`$PROG start $DIR\`)"
	set_paths
	local d D host dom addr pw local_part var users
	printf 'export EMAILQOS_MAILSTACK_DIR=%s\n' "$(q "$DIR")"
	printf 'export EMAILQOS_CA_FILE=%s\n' "$(q "$CA_CRT")"
	printf 'export EMAILQOS_IMAP_USERIP_LIMIT=%s\n' "$IMAP_USERIP_LIMIT"
	for d in "${DOMAINS[@]}"; do
		D=${d^^} host=$(host_of "$d") dom=$d.test
		printf 'export EMAILQOS_%s_DOMAIN=%s\n' "$D" "$dom"
		printf 'export EMAILQOS_%s_HOST=%s\n' "$D" "$host"
		printf 'export EMAILQOS_%s_MX=%s:%s\n' "$D" "$host" "$(port_of "$d" $OFF_MX)"
		printf 'export EMAILQOS_%s_SMTP_PLAIN=%s:%s\n' "$D" "$host" "$(port_of "$d" $OFF_SMTP_PLAIN)"
		printf 'export EMAILQOS_%s_SMTP_STARTTLS=%s:%s\n' "$D" "$host" "$(port_of "$d" $OFF_SMTP_STARTTLS)"
		printf 'export EMAILQOS_%s_SMTPS=%s:%s\n' "$D" "$host" "$(port_of "$d" $OFF_SMTPS)"
		printf 'export EMAILQOS_%s_IMAP=%s:%s\n' "$D" "$host" "$(port_of "$d" $OFF_IMAP)"
		printf 'export EMAILQOS_%s_IMAP_STARTTLS=%s:%s\n' "$D" "$host" "$(port_of "$d" $OFF_IMAP)"
		printf 'export EMAILQOS_%s_IMAPS=%s:%s\n' "$D" "$host" "$(port_of "$d" $OFF_IMAPS)"
		printf 'export EMAILQOS_%s_POP3=%s:%s\n' "$D" "$host" "$(port_of "$d" $OFF_POP3)"
		printf 'export EMAILQOS_%s_POP3_STARTTLS=%s:%s\n' "$D" "$host" "$(port_of "$d" $OFF_POP3)"
		printf 'export EMAILQOS_%s_POP3S=%s:%s\n' "$D" "$host" "$(port_of "$d" $OFF_POP3S)"
		printf 'export EMAILQOS_%s_MAIL_ROOT=%s\n' "$D" "$(q "$DIR/$d/mail")"
		printf 'export EMAILQOS_%s_POSTFIX_LOG=%s\n' "$D" "$(q "$DIR/$d/log/postfix.log")"
		printf 'export EMAILQOS_%s_DOVECOT_LOG=%s\n' "$D" "$(q "$DIR/$d/log/dovecot.log")"
		users=()
		while read -r addr pw; do
			[[ -z $addr || $addr == \#* ]] && continue
			[[ $(domain_letter "$addr") == "$d" ]] || continue
			local_part=${addr%@*}
			users+=("$addr")
			var=${local_part^^}
			var=EMAILQOS_${D}_${var//[^A-Z0-9]/_}
			printf 'export %s_ADDR=%s\n' "$var" "$(q "$addr")"
			printf 'export %s_PASS=%s\n' "$var" "$(q "$pw")"
			printf 'export %s_MAILDIR=%s\n' "$var" "$(q "$DIR/$d/mail/$local_part/Maildir")"
		done <"$DIR/users"
		printf 'export EMAILQOS_%s_USERS=%s\n' "$D" "$(q "${users[*]}")"
	done
}

cmd_adduser() {
	local addr=${1:-} pw=${2:-}
	[[ -n $addr && -n $pw ]] || die "usage: $PROG adduser ADDRESS PASSWORD [DIR]"
	addr=${addr,,}
	[[ $addr =~ ^[a-z0-9._+-]+@[ab]\.test$ ]] || die "$addr: want LOCAL@a.test or LOCAL@b.test (local part of a-z 0-9 . _ + -)"
	[[ $pw =~ ^[^[:space:]:]+$ ]] || die "password must not contain spaces or ':'"
	load_state || die "not started: run \`$PROG start $DIR\` first"
	set_paths
	exec 9>"$DIR/.lock"
	flock -w 120 9 || die "another $PROG is working on $DIR"
	local tmp
	tmp=$(mktemp "$DIR/users.XXXXXX")
	awk -v a="$addr" '$1 != a' "$DIR/users" >"$tmp"
	printf '%s %s\n' "$addr" "$pw" >>"$tmp"
	chmod 600 "$tmp"
	mv -f "$tmp" "$DIR/users"
	if render_accounts; then
		local d
		for d in "${DOMAINS[@]}"; do
			[[ -n $(postfix_pid "$d") ]] && postfix -c "$DIR/$d/postfix" reload >/dev/null 2>&1
		done
	fi
	log "account $addr ready (Maildir $DIR/$(domain_letter "$addr")/mail/${addr%@*}/Maildir)"
}

cmd_relay() { # DOMAIN HOST:PORT|off
	local d=${1%.test} via=${2:-}
	[[ $d == a || $d == b ]] || die "relay: domain $1: want a or b"
	[[ $via == off || $via =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+$ ]] || die "relay: $via: want a 127.0.0.0/8 HOST:PORT or off"
	load_state || die "not started: run \`$PROG start $DIR\` first"
	set_paths
	exec 9>"$DIR/.lock"
	flock -w 120 9 || die "another $PROG is working on $DIR"
	local o=a
	[[ $d == a ]] && o=b
	if [[ $via == off ]]; then
		via=$(host_of "$o"):$(port_of "$o" $OFF_MX)
	fi
	# The same map line render_postfix writes, with another next hop.
	if printf '%s smtp:[%s]:%s\n' "$o.test" "${via%:*}" "${via##*:}" |
		write_if_changed "$DIR/$d/postfix/transport" 644; then
		[[ -n $(postfix_pid "$d") ]] && postfix -c "$DIR/$d/postfix" reload >/dev/null 2>&1
	fi
	log "$d.test routes $o.test through $via"
}

# ---------------------------------------------------------------- main

main() {
	local cmd=${1:-}
	(($#)) && shift
	local args=()
	case $cmd in
	adduser)
		(($# >= 2)) || die "usage: $PROG adduser ADDRESS PASSWORD [DIR]"
		args=("$1" "$2")
		shift 2
		;;
	relay)
		(($# >= 2)) || die "usage: $PROG relay DOMAIN HOST:PORT|off [DIR]"
		args=("$1" "$2")
		shift 2
		;;
	start | stop | restart | status | env | install) ;;
	-h | --help | help) usage 0 ;;
	*) usage ;;
	esac
	(($# <= 1)) || usage
	DIR=${1:-${EMAILQOS_MAILSTACK_DIR:-/tmp/emailqos-mailstack}}
	[[ $DIR == /* ]] || DIR=$PWD/$DIR
	DIR=$(realpath -m "$DIR")
	[[ $DIR != / ]] || die "DIR must not be /"
	[[ $DIR =~ ^[A-Za-z0-9._/+-]+$ ]] || die "DIR $DIR: use only letters, digits and . _ + - / (it goes into postfix and dovecot configs)"
	# unix socket paths (sun_path) are limited to 107 bytes; keep room for
	# dovecot's own sockets under DIR/x/run/.
	((${#DIR} <= 60)) || die "DIR $DIR is too long (unix socket paths): keep it to 60 characters"
	case $cmd in
	start) cmd_start ;;
	stop) cmd_stop ;;
	restart) cmd_stop && cmd_start ;;
	status) cmd_status ;;
	env) cmd_env ;;
	install) install_packages && ensure_vmail_user ;;
	adduser) cmd_adduser "${args[@]}" ;;
	relay) cmd_relay "${args[@]}" ;;
	esac
}

main "$@"
