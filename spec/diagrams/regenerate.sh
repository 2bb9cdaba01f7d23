#!/usr/bin/env sh
# Regenerate every committed diagram from the model.  tests/test_diagrams.py
# fails when these files differ from what the model produces now, so run this
# after changing the table and commit the result.
set -eu
cd "$(dirname "$0")"
for mode in all agg prefill decode encode; do
    dynamo-backend-protocol diagram --mode "$mode" --format dot -o "request-$mode.dot"
    dynamo-backend-protocol diagram --mode "$mode" --format svg -o "request-$mode.svg"
done
dynamo-backend-protocol diagram --machine lifecycle --format dot -o lifecycle.dot
dynamo-backend-protocol diagram --machine lifecycle --format svg -o lifecycle.svg
dynamo-backend-protocol diagram --machine raw --format dot -o raw.dot
dynamo-backend-protocol diagram --machine raw --format svg -o raw.svg
