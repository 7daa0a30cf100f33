"""What the new host is: its DNS records per phase, its firewall, its files rendered from templates/."""
