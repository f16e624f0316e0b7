-- wrk script: GET /v1/sys/health with the same headers as a verify (the baseline route).
local token = os.getenv("TOKEN")
request = function()
  return wrk.format("GET", "/v1/sys/health", { ["Authorization"] = "Bearer " .. token })
end
