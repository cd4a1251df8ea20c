#!/usr/bin/env bash
# The system packages `make test` needs, checked in milliseconds before the venv
# install and pytest (which take minutes):
#   mosquitto      the broker tests (a real broker, never skipped)
#   postgresql     the PostgreSQL tests (initdb + postgres: a throw-away server, host/services/storage/pgserver.py)
#   node, npm      the MicroPython VM tests (npm @micropython/micropython-webassembly-pyscript)
#   python3-venv   creating .venv (only checked while .venv does not exist yet)
# A missing one is installed with apt-get when we are root or have passwordless
# sudo (`apt-get update` first if the install fails, e.g. a fresh image without
# package lists); otherwise, or when that fails, the script prints ONE line naming
# the command to run and exits 1.
#
# Environment:
#   MEDGE_NO_INSTALL=1   never install, only check (and name the command)
#   MEDGE_SYSDEPS_PATH   where to look for the binaries (default: $PATH plus the
#                        sbin folders, where Debian puts mosquitto; host/broker/launch.py
#                        looks in the same places)
#   MEDGE_SYSDEPS_PGLIB  where else to look for initdb (default /usr/lib/postgresql, as
#                        <major>/bin/initdb: Debian keeps the server binaries off PATH)
#   PYTHON               the interpreter that creates .venv (default python3)
#   MEDGE_VENV           the venv folder (default .venv beside this repo's Makefile)
#
# Only bash builtins run on the check path, so it works under any PATH.
set -u

search_path=${MEDGE_SYSDEPS_PATH-"${PATH}:/usr/local/sbin:/usr/sbin:/sbin"}
pglib=${MEDGE_SYSDEPS_PGLIB-/usr/lib/postgresql}
python=${PYTHON:-python3}
here=${BASH_SOURCE[0]}
[[ $here == */* ]] && here=${here%/*} || here=.
venv=${MEDGE_VENV:-"$here/../.venv"}

# locate NAME: print the path of an executable NAME in one of search_path's folders
# (NAME itself when it is a path).
locate() {
    local dir
    local IFS=:
    if [[ $1 == */* ]]; then
        [[ -f $1 && -x $1 ]] && printf '%s\n' "$1"
        return
    fi
    for dir in $search_path; do
        [[ -n $dir && -f $dir/$1 && -x $dir/$1 ]] && printf '%s\n' "$dir/$1" && return 0
    done
    return 1
}

has() { locate "$1" >/dev/null; }

# has_pg_server: initdb and postgres side by side, on search_path or in pglib/<major>/bin
# (the places host/services/storage/pgserver.py looks).
has_pg_server() {
    local dir
    if dir=$(locate initdb); then
        [[ -x ${dir%/*}/postgres ]] && return 0
    fi
    for dir in "$pglib"/*/bin; do
        [[ -x $dir/initdb && -x $dir/postgres ]] && return 0
    done
    return 1
}

pkgs=()
needs=()
check() {
    pkgs=()
    needs=()
    has mosquitto || { pkgs+=(mosquitto); needs+=("mosquitto is needed by the broker tests"); }
    has_pg_server || { pkgs+=(postgresql); needs+=("PostgreSQL (initdb, postgres) is needed by the database tests"); }
    has node || { pkgs+=(nodejs); needs+=("Node.js is needed by the MicroPython VM tests"); }
    has npm || { pkgs+=(npm); needs+=("npm is needed to install the MicroPython VM"); }
    if [[ ! -x $venv/bin/python ]]; then
        local py
        if ! py=$(locate "$python"); then
            pkgs+=(python3 python3-venv); needs+=("$python is needed to create .venv")
        elif ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
            pkgs+=(python3-venv); needs+=("python3-venv is needed to create .venv")
        fi
    fi
    ((${#pkgs[@]} == 0))
}

check && exit 0

sudo=()
can_install=0
if [[ ${MEDGE_NO_INSTALL:-} != 1 ]] && command -v apt-get >/dev/null 2>&1; then
    if ((EUID == 0)); then
        can_install=1
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
        can_install=1
    fi
fi

if ((can_install)); then
    echo "medge: installing ${pkgs[*]} (apt-get)" >&2
    apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
    install=("${apt[@]}" install -y -q --no-install-recommends "${pkgs[@]}")
    if ! "${install[@]}"; then
        # A fresh image has no package lists ("Unable to locate package").
        "${apt[@]}" update -q && "${install[@]}"
    fi
    check && exit 0
fi

((EUID == 0)) && prefix="" || prefix="sudo "
msg=${needs[0]}
for n in "${needs[@]:1}"; do msg+="; $n"; done
echo "medge: $msg: run  ${prefix}apt-get install -y ${pkgs[*]}" >&2
exit 1
