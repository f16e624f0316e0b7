-- wrk script: GET /v1/sys/health with the same headers as a verify (the baseline route),
-- formatted once and returned from a function per request, as verify.lua does.
local formatted = wrk.format("GET", "/v1/sys/health",
  { ["Authorization"] = "Bearer " .. os.getenv("TOKEN") })
request = function()
  return formatted
end
