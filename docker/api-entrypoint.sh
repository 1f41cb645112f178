#!/bin/sh
# The API image's entrypoint (the API and the Celery workers), in three steps:
#
# 1. Started as root (the image's default), it takes the user who owns BMW's bind mount of
#    jsonFiles (`-v $(pwd)/jsonFiles:/jsonFiles`), so the registry and the videos on the host stay
#    theirs and writable, or the service user 10001 where jsonFiles is root's or not mounted (a
#    named volume). Folders of root's among the service's own are handed to that user (a host folder
#    Docker creates for a bind mount, a new volume); a folder owned by anyone else is left alone.
#    Then it drops root for good (setpriv), as the official Redis and PostgreSQL images do.
# 2. It seeds the registry from ANONYMIZER_URL_SEED where there is none yet, or only BMW's empty
#    file (`{"urls": []}` with no servers section, which the service never writes).
# 3. It runs the command.
set -eu
data="${ANONYMIZER_API_DATA_DIR:-/data}"
json_files="${BMW_JSONFILES:-/jsonFiles}"
videos="${BMW_VIDEOS:-/main/anonymized_videos}"
service_user=10001

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$json_files" "$videos" "$data/jobs" "$data/.uploads"
    uid=$(stat -c %u "$json_files")
    gid=$(stat -c %g "$json_files")
    if [ "$uid" = 0 ]; then
        uid=$service_user
        gid=$service_user
    fi
    for folder in "$json_files" "$videos"; do
        [ "$(stat -c %u "$folder")" = 0 ] && chown "$uid:$gid" "$folder"
    done
    # the service's own volumes (jobs, uploads in progress) follow whoever runs it
    chown -R "$uid:$gid" "$data/jobs" "$data/.uploads"
    exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- /bin/sh "$0" "$@"
fi

registry="$data/jsonFiles/url_configuration.json"
seed="${ANONYMIZER_URL_SEED:-}"
if [ -n "$seed" ] && [ -f "$seed" ] && python3 - "$registry" <<'EOF'
import json
import sys

try:
    with open(sys.argv[1]) as registry:
        content = json.load(registry)
except FileNotFoundError:
    sys.exit(0)
except ValueError:
    sys.exit(1)  # not JSON: the API keeps it aside and says so; it is not overwritten here
sys.exit(0 if isinstance(content, dict) and not content.get("urls") and "servers" not in content else 1)
EOF
then
    mkdir -p "$(dirname "$registry")"
    cp "$seed" "$registry.seed.tmp"
    mv "$registry.seed.tmp" "$registry"
fi
exec "$@"
