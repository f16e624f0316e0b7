-- wrk script: POST /v1/keys/verify with the keys of keys.txt (one per line), in a scattered
-- order. Every request is formatted once, at start, so that wrk spends as little per request
-- here as for health (health.lua does the same): the two rates compare the server, not Lua.
local token = os.getenv("TOKEN")
local requests = {}
for key in io.lines(os.getenv("KEYS_FILE")) do
  requests[#requests + 1] = wrk.format("POST", "/v1/keys/verify",
    { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" },
    '{"key":"' .. key .. '","cost":0}')
end
local n = 0
request = function()
  n = n + 1
  return requests[(n * 2654435761) % #requests + 1]
end
