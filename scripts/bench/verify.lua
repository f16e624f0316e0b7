-- wrk script: POST /v1/keys/verify with a random key from keys.txt (one per line).
local keys = {}
for line in io.lines(os.getenv("KEYS_FILE")) do keys[#keys + 1] = line end
local token = os.getenv("TOKEN")
local n = 0
request = function()
  n = n + 1
  local key = keys[(n * 2654435761) % #keys + 1]
  return wrk.format("POST", "/v1/keys/verify",
    { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" },
    '{"key":"' .. key .. '","cost":0}')
end
