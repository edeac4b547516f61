-- A Chat API inbound-text webhook with a fresh message id per request (no duplicates),
-- spread over `conversations` chats. Args: run tag, number of conversations.
local thread_ids = 0
function setup(thread)
  thread:set("tid", thread_ids)
  thread_ids = thread_ids + 1
end

function init(args)
  tag = args[1] or "run"
  conversations = tonumber(args[2] or "200")
  counter = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local chat = string.format("7999%07d@c.us", (counter * 7 + tid) % conversations)
  local id = string.format("false_%s_%s_%d_%d", chat, tag, tid, counter)
  local body = string.format(
    '{"instanceId":"1101","messages":[{"id":"%s","body":"hello number %d","fromMe":false,' ..
    '"self":0,"isForwarded":0,"author":"%s","time":1700000000,"chatId":"%s",' ..
    '"messageNumber":%d,"type":"chat","senderName":"Customer %d"}]}',
    id, counter, chat, chat, tid * 100000000 + counter, counter % 97)
  return wrk.format(nil, nil, nil, body)
end
