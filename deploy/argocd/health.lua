-- Argo CD health check for shadowsync resources (ThingShadow, RetainedMessage,
-- ThingShadowSet). Argo CD runs it with the live object in `obj` (gopher-lua, Lua 5.1).
--
--   no status yet, or status older than the spec   -> Progressing
--   Stalled=True (invalid spec, conflict under
--   Preserve, access denied, a set's rollout
--   aborted)                                       -> Degraded
--   being deleted (finalizer cleanup)              -> Progressing
--   Ready=False, reason Paused (the annotation
--   iot.shadowsync.dev/paused), or a set in
--   phase Paused                                   -> Suspended
--   a set in phase Aborted                         -> Degraded
--   Reconciling=True (write or retry under way),
--   or a set in phase Progressing                  -> Progressing
--   Ready=True (a set: its rollout is Complete)    -> Healthy
--   Ready=False otherwise (retried by the
--   operator: throttling, unreachable endpoint,
--   duplicate target, ...)                         -> Degraded
--   anything else (Ready missing or Unknown)       -> Progressing
--
-- The message is the deciding condition's "Reason: message"; for a ThingShadowSet,
-- followed by the rollout's figures ("; step 2/3 (50%): 20/40 updated, 18 converged,
-- 1 failed").

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

-- Argo CD hands JSON numbers over as floats: print them as whole numbers.
local function whole(n)
  return tostring(math.floor(n))
end

local status = obj.status
local generation = nil
local deleting = false
if obj.metadata ~= nil then
  generation = obj.metadata.generation
  deleting = obj.metadata.deletionTimestamp ~= nil
end
local set = obj.kind == "ThingShadowSet"

local function waiting()
  return result("Progressing", "Waiting for the operator to observe generation " .. tostring(math.floor(generation)))
end

-- A set's message ends with where its rollout stands.
local function figures(message)
  if not set or status.targeted == nil then
    return message
  end
  local text = whole(status.updated or 0) .. "/" .. whole(status.targeted) .. " updated, "
    .. whole(status.converged or 0) .. " converged, " .. whole(status.failed or 0) .. " failed"
  if status.conflicting ~= nil and status.conflicting > 0 then
    text = text .. ", " .. whole(status.conflicting) .. " conflicting"
  end
  if status.step ~= nil and status.step ~= "" then
    text = "step " .. status.step .. ": " .. text
  end
  return message .. "; " .. text
end

if status == nil or status.conditions == nil or #status.conditions == 0 then
  return result("Progressing", "Waiting for the operator to report status")
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  return waiting()
end

local stalled = find(status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  return result("Degraded", figures(describe(stalled)))
end

if deleting then
  if set then
    return result("Progressing", "Deleting: the set's ThingShadows clean up in AWS IoT before they are removed")
  end
  return result("Progressing", "Deleting: cleaning up in AWS IoT before the finalizer is removed")
end

local ready = find(status.conditions, "Ready")
if ready ~= nil and ready.observedGeneration ~= nil and generation ~= nil and ready.observedGeneration < generation then
  return waiting()
end

local phase = nil
if set then
  phase = status.phase
end

if ready ~= nil and ready.status == "False" and ready.reason == "Paused" then
  return result("Suspended", figures(describe(ready)))
end
if phase == "Paused" then
  return result("Suspended", figures("Paused"))
end

if phase == "Aborted" then
  if ready ~= nil and ready.status == "False" then
    return result("Degraded", figures(describe(ready)))
  end
  return result("Degraded", figures("RolloutAborted"))
end

local reconciling = find(status.conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  return result("Progressing", figures(describe(reconciling)))
end
if phase == "Progressing" then
  if ready ~= nil and ready.status == "False" then
    return result("Progressing", figures(describe(ready)))
  end
  return result("Progressing", figures("RolloutProgressing"))
end

if ready ~= nil then
  if ready.status == "True" then
    return result("Healthy", figures(describe(ready)))
  end
  if ready.status == "False" then
    return result("Degraded", figures(describe(ready)))
  end
end

return result("Progressing", "Waiting for the Ready condition")
