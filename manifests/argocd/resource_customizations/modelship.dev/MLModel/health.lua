-- ArgoCD health check for modelship.dev/MLModel (Lua 5.1, as ArgoCD's gopher-lua runs it).
-- Healthy only when Ready is True for the current generation; Progressing while a rollout is in
-- flight or the operator has not caught up; Degraded with the Degraded condition's message;
-- Suspended when the model is deliberately scaled to zero.
local hs = {}

local function find(conditions, type_)
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local generation = obj.metadata.generation or 0
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Modelship operator to report status"
  return hs
end

if status.observedGeneration == nil or status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Modelship operator to observe generation " .. tostring(generation)
  return hs
end

local function current(c)
  return c ~= nil and (c.observedGeneration == nil or c.observedGeneration >= generation)
end

local degraded = find(status.conditions, "Degraded")
if current(degraded) and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.message or degraded.reason or "Degraded"
  return hs
end

local ready = find(status.conditions, "Ready")
if current(ready) and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end

if current(ready) and ready.reason == "ScaledToZero" then
  hs.status = "Suspended"
  hs.message = ready.message or "Scaled to zero"
  return hs
end

local progressing = find(status.conditions, "Progressing")
hs.status = "Progressing"
if current(progressing) and progressing.status == "True" and progressing.message ~= nil then
  hs.message = progressing.message
elseif ready ~= nil and ready.message ~= nil then
  hs.message = ready.message
else
  hs.message = "Waiting for the MLModel to become Ready"
end
return hs
