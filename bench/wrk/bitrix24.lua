-- A Bitrix24 ONIMCONNECTORMESSAGEADD event, form-encoded exactly as the fake portal posts
-- it; the body template comes in a file with @ID@ and @CHAT@ where each request differs.
-- Args: body template path, run tag, number of conversations.
local thread_ids = 0
function setup(thread)
  thread:set("tid", thread_ids)
  thread_ids = thread_ids + 1
end

function init(args)
  local file = io.open(args[1], "r")
  template = file:read("*a")
  file:close()
  tag = args[2] or "run"
  conversations = tonumber(args[3] or "200")
  counter = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  counter = counter + 1
  local id = string.format("%d%08d", tid + 1, counter)
  local chat = string.format("7999%07d", (counter * 7 + tid) % conversations)
  local body = template:gsub("@ID@", id):gsub("@CHAT@", chat)
  return wrk.format(nil, nil, nil, body)
end
