# Shared by tools/ocf/fence-peer and tools/ocf/after-resync (sourced).
if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi

log() {
    echo "repd-handler: $*" >&2
    command -v logger >/dev/null 2>&1 && logger -t repd-handler -- "$*" 2>/dev/null
    return 0
}

constraint_id() { # resource, peer ("" for the prefix of all of a resource's)
    if [ -n "$2" ]; then echo "repd-fence-$1-$2"; else echo "repd-fence-$1-"; fi
}

# Prints the id of the promotable clone holding an ocf:repd:repd primitive.
find_clone() {
    if [ -n "${REPD_PCMK_CLONE:-}" ]; then echo "$REPD_PCMK_CLONE"; return 0; fi
    command -v cibadmin >/dev/null 2>&1 || { log "cibadmin missing (Debian package pacemaker-cli-utils)"; return 1; }
    _res=$(cibadmin --query --scope resources 2>&1) || { log "cannot query the CIB: $_res"; return 1; }
    _ids=$(printf '%s' "$_res" | "$PYTHON" -c '
import sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read())
for c in root.iter("clone"):
    for p in c.iter("primitive"):
        if (p.get("class"), p.get("provider"), p.get("type")) == ("ocf", "repd", "repd"):
            print(c.get("id"))
            break
') || { log "cannot parse the CIB resources"; return 1; }
    case "$(echo "$_ids" | grep -c .)" in
        1) echo "$_ids" ;;
        0) log "no clone of ocf:repd:repd in the CIB; set REPD_PCMK_CLONE"; return 1 ;;
        *) log "several repd clones ($(echo $_ids)); set REPD_PCMK_CLONE"; return 1 ;;
    esac
}
