import { parse } from "ssh-config";
const t = `# top
Port 22

Host a b "c d" !x
  HostName foo  # c
  IdentityFile "~/my key"
  UserKnownHostsFile /a "/b c"
Match host x,y !user z exec "true"
  Include a/*.conf b
Host=q
  RemoteForward 127.0.0.1:0 127.0.0.1:80
`;
console.log(JSON.stringify(parse(t), null, 1));
