-- Argo CD health check for shadowsync resources (ThingShadow, RetainedMessage).
-- Argo CD runs it with the live object in `obj` (gopher-lua, Lua 5.1).
--
--   no status yet, or status older than the spec   -> Progressing
--   Stalled=True (invalid spec, conflict under
--   Preserve, access denied)                       -> Degraded
--   being deleted (finalizer cleanup)              -> Progressing
--   Reconciling=True (write or retry under way)    -> Progressing
--   Ready=True                                     -> Healthy
--   Ready=False, reason Paused                     -> Suspended
--   Ready=False otherwise (retried by the
--   operator: throttling, unreachable endpoint,
--   duplicate target, ...)                         -> Degraded
--   anything else (Ready missing or Unknown)       -> Progressing
--
-- The message is the deciding condition's "Reason: message".

local hs = {}

local function find(conditions, wanted)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function describe(c)
  local reason = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end

local function result(status, message)
  hs.status = status
  hs.message = message
  return hs
end

local status = obj.status
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if status == nil or status.conditions == nil or #status.conditions == 0 then
  return result("Progressing", "Waiting for the operator to report status")
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  return result("Progressing", "Waiting for the operator to observe generation " .. tostring(math.floor(generation)))
end

local stalled = find(status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  return result("Degraded", describe(stalled))
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  return result("Progressing", "Deleting: cleaning up in AWS IoT before the finalizer is removed")
end

local reconciling = find(status.conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  return result("Progressing", describe(reconciling))
end

local ready = find(status.conditions, "Ready")
if ready ~= nil then
  if ready.observedGeneration ~= nil and generation ~= nil and ready.observedGeneration < generation then
    return result("Progressing", "Waiting for the operator to observe generation " .. tostring(math.floor(generation)))
  end
  if ready.status == "True" then
    return result("Healthy", describe(ready))
  end
  if ready.status == "False" then
    if ready.reason == "Paused" then
      return result("Suspended", describe(ready))
    end
    return result("Degraded", describe(ready))
  end
end

return result("Progressing", "Waiting for the Ready condition")
