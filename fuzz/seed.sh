#!/usr/bin/env bash
# Builds the seed corpora of every fuzz target in fuzz/corpus/<target>/ from
# fixtures/ (and from ../shared/whatsapp/samples when it is there). Each target
# reads a leading mode byte; the seeds carry the one that reaches the parser.
set -euo pipefail
cd "$(dirname "$0")"
root=..
shared=$root/../shared/whatsapp/samples
c=corpus
mkdir -p $c/webhook $c/flows $c/chatbot_compile $c/engine_turns $c/vars $c/datasource

# seed <dir> <name> <prefix> <file or ->: the prefix byte(s), then the file.
seed() {
    local dir=$1 name=$2 prefix=$3 src=$4
    { printf '%s' "$prefix"; cat "$src"; } > "$c/$dir/$name"
}

# webhook: '{' (123 % 8 = 3) selects the right signature.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/text.json" <<'J'
{"object":"whatsapp_business_account","entry":[{"id":"987654321","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"123456789"},"contacts":[{"profile":{"name":"Ayşe"},"wa_id":"905551112233"}],"messages":[{"from":"905551112233","id":"wamid.A1","timestamp":"1700000000","type":"text","text":{"body":"merhaba"}}]}}]}]}
J
cat > "$tmp/status.json" <<'J'
{"object":"whatsapp_business_account","entry":[{"id":"987654321","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"123456789"},"statuses":[{"id":"wamid.B1","status":"failed","timestamp":"1700000001","recipient_id":"905551112233","errors":[{"code":131049,"title":"x","error_data":{"details":"y"}}]}]}}]}]}
J
cat > "$tmp/interactive.json" <<'J'
{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},"messages":[{"from":"9","id":"wamid.C","timestamp":1,"type":"interactive","interactive":{"type":"nfm_reply","nfm_reply":{"response_json":"{\"flow_token\":\"t\",\"a\":1}","body":"Sent","name":"flow"}}},{"from":"9","id":"wamid.D","type":"reaction","reaction":{"message_id":"wamid.C","emoji":"👍"}},{"from":"9","id":"wamid.E","type":"image","image":{"id":"m1","caption":"c","mime_type":"image/jpeg"}},{"from":"9","id":"wamid.F","type":"button","button":{"payload":"p","text":"t"}}]}}]}]}
J
for f in "$tmp"/*.json; do seed webhook "$(basename "$f")" '{' "$f"; done
if [ -d "$shared/meta-docs" ]; then
    for f in "$shared"/meta-docs/webhook_*.json; do seed webhook "$(basename "$f")" '{' "$f"; done
fi

# flows: mode 1 = encrypted; 33 bytes of key, IV and damage selector (0 = none),
# then the plaintext request.
flow_seed() {
    local name=$1 json=$2
    { printf '\001'; head -c 32 /dev/zero | tr '\0' 'k'; printf '\000'; printf '%s' "$json"; } > "$c/flows/$name"
}
flow_seed ping '{"version":"3.0","action":"ping"}'
flow_seed init '{"version":"3.0","action":"INIT","flow_token":"00000000-0000-0000-0000-000000000000:n1"}'
flow_seed exchange '{"version":"3.0","action":"data_exchange","screen":"A","data":{"brand":"1"},"flow_token":"x:y"}'
flow_seed back '{"version":"3.0","action":"BACK","screen":"B","data":{}}'
flow_seed error '{"version":"3.0","action":"data_exchange","data":{"error":"x","error_message":"y"}}'
printf '\000{"encrypted_flow_data":"AAAA","encrypted_aes_key":"AAAA","initial_vector":"AAAA"}' > $c/flows/raw

# chatbots: ' ' (even) selects raw JSON for chatbot_compile; engine_turns takes
# the document, a NUL, then the conversation bytes.
for f in $root/fixtures/chatbots/*.json $root/fixtures/e2e/*.json; do
    seed chatbot_compile "$(basename "$f")" ' ' "$f"
    { tr -d '\n' < "$f"; printf '\000'; head -c 64 /dev/urandom; } > "$c/engine_turns/$(basename "$f")"
done
if [ -d "$root/../shared/whatsapp-builder/chatbots" ]; then
    for f in "$root"/../shared/whatsapp-builder/chatbots/*.json; do
        seed chatbot_compile "$(basename "$f")" ' ' "$f"
        { tr -d '\n' < "$f"; printf '\000'; head -c 64 /dev/urandom; } > "$c/engine_turns/$(basename "$f")"
    done
fi

# vars: templates and variable trees as text; datasource: responses.
printf 'Hello {{customer_name}}, order {{rest_api_1.data[0].title}} {{ a.b }} {{x' > $c/vars/template
printf '$.data[*].id rest_api_1.data[0].items[2].name {"rest_api_1":{"data":[{"title":"t"}]}}' > $c/vars/paths
printf '\000\001data\000{"id":"id","titleField":"name"}\000{"data":[{"id":1,"attributes":{"name":"Bosch"}},{"id":2,"name":"x"}]}' > $c/datasource/strapi
printf '\002\000\000{"data":{"brands":[{"id":"a","title":"A"}]},"errors":[{"message":"m"}]}' > $c/datasource/graphql
printf '\000\001items\000{}\000{"items":[{"id":"1","title":"One","description":"d"}]}' > $c/datasource/rest
echo "seeded: $(find $c -type f | wc -l) files in fuzz/$c"
