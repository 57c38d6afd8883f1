// One call through an official Node SDK, chosen by argv: prints what the client returned, as JSON.
//   node clients.mjs openai|openai-stream|anthropic|anthropic-stream|mcp|mcp-tools BASE_URL
import Anthropic from "@anthropic-ai/sdk";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import OpenAI from "openai";

const [kind, baseURL] = process.argv.slice(2);
const question = [{ role: "user", content: "Say hello." }];

async function openai(stream) {
  const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: "sk-test", maxRetries: 0 });
  if (!stream) {
    const completion = await client.chat.completions.create({ model: "gpt-4o-mini", messages: question });
    return completion.choices[0].message.content;
  }
  const events = await client.chat.completions.create({ model: "gpt-4o-mini", messages: question, stream: true });
  let text = "";
  for await (const chunk of events) text += chunk.choices[0]?.delta?.content ?? "";
  return text;
}

async function anthropic(stream) {
  const client = new Anthropic({ baseURL, apiKey: "sk-ant-test", maxRetries: 0 });
  const request = { model: "claude-sonnet-4-5", max_tokens: 100, messages: question };
  if (!stream) {
    const message = await client.messages.create(request);
    return message.content[0].text;
  }
  const final = await client.messages.stream(request).finalMessage();
  return final.content[0].text;
}

async function mcpClient() {
  const client = new Client({ name: "egressguard-test", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(`${baseURL}/mcp`)));
  return client;
}

async function mcp() {
  const client = await mcpClient();
  const tools = await client.listTools();
  const result = await client.callTool({ name: tools.tools[0].name, arguments: { query: "refund policy" } });
  await client.close();
  return result.content[0].text;
}

async function mcpTools() {
  const client = await mcpClient();
  const tools = await client.listTools();
  await client.close();
  return tools.tools.map((tool) => tool.description);
}

const calls = {
  openai: () => openai(false),
  "openai-stream": () => openai(true),
  anthropic: () => anthropic(false),
  "anthropic-stream": () => anthropic(true),
  mcp,
  "mcp-tools": mcpTools,
};
console.log(JSON.stringify({ answer: await calls[kind]() }));
