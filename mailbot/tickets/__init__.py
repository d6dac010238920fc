"""What a mail does to tickets: filing, threading, the lifecycle, agents, jobs."""
