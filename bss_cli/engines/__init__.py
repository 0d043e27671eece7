"""Engines that run bss stages past one machine (imported only when asked for)."""
