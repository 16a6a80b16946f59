"""Chat templates for GGUF files that carry none (base models such as the embedded Gemma)."""

from __future__ import annotations

# Gemma's published turn format (system folded into the first user turn, "model" role).
GEMMA = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') "
    "+ message['content'] | trim + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

# A plain turn format for anything else without a template.
GENERIC = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def template_for(metadata: dict[str, str]) -> str:
    """The GGUF's own chat template, or a fallback chosen by its architecture."""
    own = metadata.get("tokenizer.chat_template")
    if own:
        return own
    if metadata.get("general.architecture", "").startswith("gemma"):
        return GEMMA
    return GENERIC
