#!/usr/bin/env bash
# A first session with tollgate, with curl: create a limit through the management API
# (Bifrost-compatible), check requests against it until one is refused with a 429,
# report the real usage of an admitted call, and delete the limit again.
#
# Start a tollgate first (the embedded store needs nothing else):
#   cargo run --release -- --api-key secret
# then run this script. TOLLGATE_URL (default http://127.0.0.1:8080) and
# TOLLGATE_API_KEY (default secret) point it elsewhere. tests/examples.rs runs it.
set -euo pipefail

URL=${TOLLGATE_URL:-http://127.0.0.1:8080}
KEY=${TOLLGATE_API_KEY:-secret}
AUTH="Authorization: Bearer $KEY"
JSON='Content-Type: application/json'

echo '== 1. A limit for virtual key vk-demo on gpt-4o: 2 requests a minute, 10,000 tokens an hour, $1 a day'
created=$(curl -sS --fail-with-body "$URL/api/governance/model-configs" -H "$AUTH" -H "$JSON" -d '{
  "model_name": "gpt-4o", "provider": "openai",
  "scope": "virtual_key", "scope_id": "vk-demo",
  "rate_limit": {"request_max_limit": 2, "request_reset_duration": "1m",
                 "token_max_limit": 10000, "token_reset_duration": "1h"},
  "budgets": [{"max_limit": 1, "reset_duration": "1d"}]}')
echo "$created"
id=$(printf '%s' "$created" | sed -n 's/.*"model_config":{"id":"\([^"]*\)".*/\1/p')
[ -n "$id" ] || { echo "no config id in the answer" >&2; exit 1; }

# The gateway's check before an upstream call: 500 tokens and $0.01 estimated.
CHECK='{"model": "gpt-4o", "provider": "openai", "virtual_key": "vk-demo", "user": "alice",
        "requests": 1, "tokens": 500, "cost": 0.01}'

echo '== 2. Two checks are allowed'
reserved_at=
for n in 1 2; do
  answer=$(curl -sS -w '\n%{http_code}' "$URL/v1/check" -H "$JSON" -d "$CHECK")
  echo "check $n: ${answer##*$'\n'}"
  echo "${answer%$'\n'*}"
  [ -n "$reserved_at" ] || reserved_at=$(printf '%s' "$answer" | sed -n 's/.*"reserved_at_ms":\([0-9]*\).*/\1/p')
done

echo '== 3. The third is refused: 429, with Retry-After and the RateLimit headers'
curl -sS -i "$URL/v1/check" -H "$JSON" -d "$CHECK"
echo

echo '== 4. The first call is over: it used 420 tokens and $0.008, so the rest is given back'
curl -sS --fail-with-body "$URL/v1/usage" -H "$JSON" -d '{
  "model": "gpt-4o", "provider": "openai", "virtual_key": "vk-demo", "user": "alice",
  "tokens": 420, "reserved_tokens": 500, "cost": 0.008, "reserved_cost": 0.01,
  "request_id": "first-session-1", "reserved_at_ms": '"${reserved_at:-null}"'}'
echo

echo '== 5. The config with its live usage, then deleted'
curl -sS --fail-with-body "$URL/api/governance/model-configs/$id" -H "$AUTH"
echo
curl -sS --fail-with-body -X DELETE "$URL/api/governance/model-configs/$id" -H "$AUTH"
echo
