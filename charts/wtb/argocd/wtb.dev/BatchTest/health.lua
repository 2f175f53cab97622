-- Argo CD health of a WTB BatchTest (resource.customizations.health.wtb.dev_BatchTest).
-- A spec edit starts a new run: until the operator has observed the new generation, the
-- phase in status belongs to the previous run, so it says nothing about this one.
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the WTB operator"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the WTB operator to observe generation " .. generation
  return hs
end
local health = {
  Succeeded = "Healthy",
  Failed = "Degraded",
  Pending = "Progressing",
  Provisioning = "Progressing",
  Running = "Progressing",
}
hs.status = health[status.phase] or "Unknown"
if status.message ~= nil and status.message ~= "" then
  hs.message = status.message
elseif status.progress ~= nil then
  hs.message = status.phase .. ": " .. status.progress .. " cells"
else
  hs.message = status.phase
end
return hs
