// Copyright (C) kroute authors
//
// Drives one OpenAI-compatible endpoint with the official openai SDK, the
// way an application would after pointing its base URL at kroute: a plain
// chat completion, a stream, a stream with usage, a tool call and a
// streamed pair of tool calls.  Prints one JSON object with what the SDK
// handed back, so that t/sdk.t can compare the gateway with the provider.
//
// usage: node sdk.mjs <base URL> [model]

import OpenAI from 'openai';

const baseURL = process.argv[2];
const model = process.argv[3] || 'gpt-5-nano';

if (!baseURL) {
    console.error('usage: node sdk.mjs <base URL> [model]');
    process.exit(2);
}

function client(reply) {
    return new OpenAI({
        apiKey: 'sk-app-key-not-for-the-provider',
        baseURL,
        maxRetries: 0,
        timeout: 15000,
        defaultHeaders: { 'X-Mock-Reply': reply },
    });
}

const messages = [{ role: 'user', content: 'Hello!' }];

const tools = [{
    type: 'function',
    function: {
        name: 'get_weather',
        description: 'Weather in a city',
        parameters: {
            type: 'object',
            properties: { city: { type: 'string' } },
            required: ['city'],
        },
    },
}];

async function chat() {
    const c = client('openai-chat-resp-plain-reasoning-model.json');
    const r = await c.chat.completions.create({ model, messages });
    return {
        content: r.choices[0].message.content,
        finish_reason: r.choices[0].finish_reason,
        model: r.model,
        usage: r.usage,
    };
}

async function stream(includeUsage, reply) {
    const c = client(reply || 'openai-chat-sse-long-47kb.sse');
    const req = { model, messages, stream: true };
    if (includeUsage) {
        req.stream_options = { include_usage: true };
    }
    const s = await c.chat.completions.create(req);
    const out = { content: '', chunks: 0, finish_reason: null, usage: null,
                  tool_calls: {} };
    for await (const chunk of s) {
        out.chunks++;
        if (chunk.usage) {
            out.usage = chunk.usage;
        }
        for (const ch of chunk.choices) {
            if (ch.delta && ch.delta.content) {
                out.content += ch.delta.content;
            }
            for (const tc of (ch.delta && ch.delta.tool_calls) || []) {
                const t = out.tool_calls[tc.index]
                          || (out.tool_calls[tc.index] = { name: '',
                                                           arguments: '' });
                if (tc.function && tc.function.name) {
                    t.name += tc.function.name;
                }
                if (tc.function && tc.function.arguments) {
                    t.arguments += tc.function.arguments;
                }
            }
            if (ch.finish_reason) {
                out.finish_reason = ch.finish_reason;
            }
        }
    }
    return out;
}

async function toolCall() {
    const c = client('openai-chat-resp-tool-call.json');
    const r = await c.chat.completions.create({ model, messages, tools });
    const m = r.choices[0].message;
    return {
        content: m.content,
        finish_reason: r.choices[0].finish_reason,
        tool_calls: (m.tool_calls || []).map(t => ({
            name: t.function.name,
            arguments: JSON.parse(t.function.arguments),
        })),
    };
}

const result = {};

try {
    result.chat = await chat();
    result.stream = await stream(false);
    result.stream_usage = await stream(true);
    result.tool_call = await toolCall();
    result.stream_tools = await stream(false,
        'openai-chat-sse-tool-calls-two-tools.sse');
} catch (e) {
    result.error = String(e && e.message || e);
}

process.stdout.write(JSON.stringify(result) + '\n');
