"""Small apps that lessons deploy as pods (image ``meshlab/<app>`` runs ``meshlab app <app>``)."""
