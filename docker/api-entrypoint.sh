#!/bin/sh
# Seed the registry (jsonFiles/url_configuration.json) into the data folder on first start, then run
# the command. The API writes that file atomically (temporary file + rename in the same folder), so
# compose mounts the whole jsonFiles folder as a volume; the seed itself is a read-only compose config.
# Once the file exists the API owns it: a later start never overwrites what /set_url changed.
set -eu
registry="${ANONYMIZER_API_DATA_DIR:-/data}/jsonFiles/url_configuration.json"
seed="${ANONYMIZER_URL_SEED:-}"
if [ ! -e "$registry" ] && [ -n "$seed" ] && [ -f "$seed" ]; then
    mkdir -p "$(dirname "$registry")"
    cp "$seed" "$registry.seed.tmp"
    mv "$registry.seed.tmp" "$registry"
fi
exec "$@"
