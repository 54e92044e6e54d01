-- wrk script: POST /v1/check with the 9-limit check of benches/sidecar_cpu.rs.
-- benches/wrk/sidecar_cpu.sh starts tollgate, creates its configs and runs wrk with it.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o","virtual_key":"vk-1","user":"u-1","tokens":10,"cost":0.001}'
