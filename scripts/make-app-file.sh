#!/usr/bin/env bash
# Writes ebin/macula.app from src/macula.app.src with the module list filled in.
set -euo pipefail
app=$1
mods=$(cd "$app/ebin" && ls *.beam | sed 's/\.beam$//' | paste -sd, -)
sed "s/{modules, \[\]}/{modules, [$mods]}/" "$app/src/macula.app.src" > "$app/ebin/macula.app"
