// pm2 start deploy/pm2/ecosystem.config.js
// One hub and any number of sidecars; pm2 restarts them when they exit.
module.exports = {
  apps: [
    {
      name: "agentcom-hub",
      script: "/usr/local/bin/agentcom-hub",
      args: "serve --config /etc/agentcom/hub.toml --data-dir /var/lib/agentcom/hub",
      autorestart: true,
      kill_timeout: 30000,
      env: { RUST_LOG: "info" },
    },
    // Copy this block per agent.
    {
      name: "agentcom-sidecar-loash",
      script: "/usr/local/bin/agentcom-sidecar",
      args: "run --config /etc/agentcom/loash.toml",
      autorestart: true,
      kill_timeout: 20000,
      env: { RUST_LOG: "info" },
    },
  ],
};
