#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432), Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672) answer
# before the integration tests run, and that the tools the infrastructure tests run offline are installed.
#
# - A service that already answers is left alone (the usual case, locally and in CI: a fast no-op).
# - A service that does not answer is installed from Debian if its package is missing, then started
#   with the same commands this kind of machine uses, and waited for.
# - Only for a PostgreSQL this script installed itself, pg_hba.conf gets a line letting the tests connect
#   as "postgres" over TCP from 127.0.0.1 without a password.
# - A missing tool is installed from Debian the same way; nothing of it is started (the tests run their own).
#
# ENSURE_SERVICES_SKIP=1 makes the script do nothing.
set -euo pipefail

if [[ ${ENSURE_SERVICES_SKIP:-} == 1 ]]; then
    echo "ensure-services: skipped (ENSURE_SERVICES_SKIP=1)" >&2
    exit 0
fi

# Non-root users on Debian lack the sbin directories (rabbitmq-server lives in /usr/sbin).
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

HOST=127.0.0.1
SERVICES=(postgresql redis rabbitmq)
declare -A PORT=([postgresql]=5432 [redis]=6379 [rabbitmq]=5672)
declare -A PACKAGE=([postgresql]=postgresql [redis]=redis-server [rabbitmq]=rabbitmq-server)
declare -A WAIT_SECONDS=([postgresql]=30 [redis]=30 [rabbitmq]=60)
declare -A LOGS=(
    [postgresql]=/var/log/postgresql/
    [redis]=/var/log/redis/ci.log
    [rabbitmq]=/var/log/rabbitmq/
)
# amtool checks the Alertmanager configuration; the package's alertmanager binary proves the inhibit rules.
# promtool checks the alerting rules and runs their unit tests (tests/infra/rules/).
# chromium (/usr/bin/chromium) is the browser Playwright drives in the console's tests (tests/app/test_console.py).
declare -A TOOL_PACKAGE=([amtool]=prometheus-alertmanager [promtool]=prometheus [chromium]=chromium)
REDIS_DIR=/var/lib/redis
REDIS_LOG=/var/log/redis/ci.log
HBA_LINE="host all postgres 127.0.0.1/32 trust  # added by tests/ensure-services.sh"

log() { echo "ensure-services: $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# Run a command as root: directly when root, through sudo otherwise.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "'$*' needs root, and this user is not root and sudo is not installed"
    fi
}

# Does something accept a TCP connection on $HOST:$1?
tcp_open() {
    # shellcheck disable=SC2016 # $0/$1 are expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# Connect to $HOST:$1, send printf-format $2, print at most $3 characters of the first reply line.
tcp_ask() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 4 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "$2" >&3
        IFS= read -r -t 3 -n "$3" reply <&3 || true
        printf "%s" "$reply"
    ' "$HOST" "$1" "$2" "$3" 2>/dev/null || true
}

# Does the service answer as that service (and is it ready for clients)?
ready() {
    local reply
    case $1 in
        postgresql)
            if command -v pg_isready >/dev/null 2>&1; then
                pg_isready -q -h "$HOST" -p "${PORT[postgresql]}" -t 3
            else
                # SSLRequest packet: any PostgreSQL answers with a single "S" or "N".
                reply=$(tcp_ask "${PORT[postgresql]}" '\0\0\0\10\4\322\26\57' 1)
                [[ $reply == S || $reply == N ]]
            fi
            ;;
        redis)
            if command -v redis-cli >/dev/null 2>&1; then
                reply=$(timeout 4 redis-cli -h "$HOST" -p "${PORT[redis]}" ping 2>/dev/null || true)
            else
                reply=$(tcp_ask "${PORT[redis]}" 'PING\r\n' 80)
            fi
            # PONG, or a password-protected server refusing us: either way Redis is up (LOADING is not).
            [[ $reply == *PONG* || $reply == *NOAUTH* || $reply == *WRONGPASS* ]]
            ;;
        rabbitmq)
            # RabbitMQ opens its AMQP listener only once it has booted.
            tcp_open "${PORT[rabbitmq]}"
            ;;
    esac
}

# Is the service there but perhaps still booting? (RabbitMQ's Erlang distribution port, AMQP port + 20000,
# opens early in its boot; the others open their client port before they accept clients.)
present() {
    tcp_open "${PORT[$1]}" || { [[ $1 == rabbitmq ]] && tcp_open $((PORT[rabbitmq] + 20000)); }
}

wait_ready() {
    local deadline=$((SECONDS + WAIT_SECONDS[$1]))
    until ready "$1"; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

wait_or_die() {
    wait_ready "$1" || die "$1 does not answer on $HOST:${PORT[$1]} after ${WAIT_SECONDS[$1]} s (see ${LOGS[$1]})"
}

package_installed() {
    local pattern status
    for pattern in "$@"; do
        status=$(dpkg-query -W -f='${Status}\n' "$pattern" 2>/dev/null || true)
        [[ $status == *"ok installed"* ]] && return 0
    done
    return 1
}

service_installed() {
    case $1 in
        postgresql) package_installed postgresql 'postgresql-[0-9]*' ;;
        *) package_installed "${PACKAGE[$1]}" ;;
    esac
}

# apt-get update is needed when a package has no install candidate (e.g. empty lists in a fresh container)
# or when the package cache has not been rebuilt for a day (stale lists give 404s on download).
apt_update_needed() {
    local pkg candidate
    [[ -n $(find /var/cache/apt/pkgcache.bin -mmin -1440 2>/dev/null) ]] || return 0
    for pkg in "$@"; do
        candidate=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')
        [[ -n $candidate && $candidate != "(none)" ]] || return 0
    done
    return 1
}

# The version of the "main" cluster to start: the newest one configured for port 5432, else the newest.
pg_version() {
    local conf version newest="" on_port=""
    while IFS= read -r conf; do
        version=${conf#/etc/postgresql/}
        version=${version%%/*}
        newest=$version
        if grep -Eq "^[[:space:]]*port[[:space:]]*=[[:space:]]*${PORT[postgresql]}([^0-9]|$)" "$conf"; then
            on_port=$version
        fi
    done < <(compgen -G '/etc/postgresql/*/main/postgresql.conf' | sort -V || true)
    [[ -n $newest ]] ||
        die "postgresql is installed but has no 'main' cluster in /etc/postgresql (create one: pg_createcluster <version> main)"
    echo "${on_port:-$newest}"
}

start_service() {
    case $1 in
        postgresql)
            as_root pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main start
            ;;
        redis)
            as_root mkdir -p "$REDIS_DIR" "$(dirname "$REDIS_LOG")" &&
                as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "${PORT[redis]}" --save "" \
                    --appendonly no --dir "$REDIS_DIR" --logfile "$REDIS_LOG"
            ;;
        rabbitmq)
            as_root rabbitmq-server -detached
            ;;
    esac
}

# Only for a PostgreSQL this script installed: let "postgres" connect over TCP from 127.0.0.1 without a password.
pg_trust_local_postgres() {
    local version hba
    version=$(pg_version)
    hba=/etc/postgresql/$version/main/pg_hba.conf
    if as_root grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+postgres[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        log "postgresql: $hba already trusts postgres from 127.0.0.1"
        return
    fi
    as_root sed -i "1i $HBA_LINE" "$hba"
    log "postgresql: added '$HBA_LINE' at the top of $hba"
    if present postgresql; then
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
        log "postgresql: reloaded cluster $version/main"
    fi
}

# 1. What answers already?
declare -A STATE=()
missing_packages=()
for service in "${SERVICES[@]}"; do
    if ready "$service"; then
        STATE[$service]="already running"
    elif present "$service"; then
        STATE[$service]=booting
    else
        STATE[$service]=down
        command -v dpkg-query >/dev/null 2>&1 ||
            die "$service does not answer on $HOST:${PORT[$service]} and this is not a Debian system: start it yourself"
        service_installed "$service" || missing_packages+=("${PACKAGE[$service]}")
    fi
done
declare -A TOOL_STATE=()
for tool in "${!TOOL_PACKAGE[@]}"; do
    if command -v "$tool" >/dev/null 2>&1; then
        TOOL_STATE[$tool]="already installed"
    else
        command -v dpkg-query >/dev/null 2>&1 ||
            die "$tool is missing and this is not a Debian system: install ${TOOL_PACKAGE[$tool]} yourself"
        TOOL_STATE[$tool]=installed
        missing_packages+=("${TOOL_PACKAGE[$tool]}")
    fi
done
# The app's fault tests run a process under libfaketime to skew its clock (issue 8).
if ! command -v faketime >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
    missing_packages+=(faketime)
fi

# 2. Install what is missing, then start what is down.
declare -A INSTALLED=()
if ((${#missing_packages[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "cannot install ${missing_packages[*]}: apt-get not found"
    if apt_update_needed "${missing_packages[@]}"; then
        log "running apt-get update"
        as_root apt-get update -q || die "apt-get update failed"
    fi
    log "installing ${missing_packages[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing_packages[@]}" ||
        die "apt-get install ${missing_packages[*]} failed"
    for service in "${SERVICES[@]}"; do
        [[ " ${missing_packages[*]} " == *" ${PACKAGE[$service]} "* ]] && INSTALLED[$service]=1
    done
fi

if [[ -n ${INSTALLED[postgresql]:-} ]]; then
    pg_trust_local_postgres
fi

for service in "${SERVICES[@]}"; do
    [[ ${STATE[$service]} == down ]] || continue
    # The package's maintainer script may have started it already (systemd, or sysvinit without a
    # policy-rc.d that forbids it); a second start would fail, so only start what is still not there.
    if [[ -n ${INSTALLED[$service]:-} ]] && present "$service"; then
        STATE[$service]="installed, started by the package"
        continue
    fi
    log "starting $service"
    start_service "$service" || die "could not start $service (see ${LOGS[$service]})"
    if [[ -n ${INSTALLED[$service]:-} ]]; then
        STATE[$service]="installed and started"
    else
        STATE[$service]=started
    fi
done

# 3. Wait until everything answers, and report.
for service in "${SERVICES[@]}"; do
    if [[ ${STATE[$service]} == booting ]]; then
        log "$service: port ${PORT[$service]} is open but $service is not ready yet; waiting"
        wait_or_die "$service"
        STATE[$service]="already running"
    fi
    [[ ${STATE[$service]} == "already running" ]] || wait_or_die "$service"
    echo "$service: ${STATE[$service]}"
done

if [[ -n ${INSTALLED[postgresql]:-} ]] && command -v psql >/dev/null 2>&1; then
    psql -w -h "$HOST" -p "${PORT[postgresql]}" -U postgres -d postgres -Atqc 'select 1' >/dev/null ||
        die "postgresql: user postgres still cannot connect over TCP to $HOST without a password"
fi

for tool in "${!TOOL_PACKAGE[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is still missing after installing ${TOOL_PACKAGE[$tool]}"
    echo "$tool: ${TOOL_STATE[$tool]}"
done
