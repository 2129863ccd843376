"""Provider worker processes: arq workers that call upstream LLM APIs with aiohttp."""
